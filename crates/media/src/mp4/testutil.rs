//! Test-only fMP4 writer: just enough boxes to build synthetic files like ffmpeg's.

/// Wraps `body` in a box of type `typ`.
pub fn bx(typ: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    out.extend_from_slice(typ);
    out.extend_from_slice(body);
    out
}

/// Wraps `body` in a box with a 64-bit size (size field 1).
pub fn bx64(typ: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = 1u32.to_be_bytes().to_vec();
    out.extend_from_slice(typ);
    out.extend_from_slice(&((body.len() + 16) as u64).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Full box: version + flags + body.
pub fn full(typ: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
    b.extend_from_slice(body);
    bx(typ, &b)
}

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn be32(v: u32) -> [u8; 4] {
    v.to_be_bytes()
}

pub fn ftyp() -> Vec<u8> {
    bx(b"ftyp", &cat(&[b"iso6", &be32(512), b"iso6cmfcmp41"]))
}

/// Sample entry of a track under construction.
pub enum Entry {
    /// avc1 with width, height and avcC profile/compat/level.
    Avc {
        width: u16,
        height: u16,
        plc: [u8; 3],
    },
    /// mp4a with channels, rate, and the AudioSpecificConfig bytes.
    Aac {
        channels: u16,
        rate: u16,
        asc: Vec<u8>,
    },
    /// Raw sample entry box.
    Raw(Vec<u8>),
}

pub fn avc1(width: u16, height: u16, plc: [u8; 3]) -> Vec<u8> {
    let mut b = vec![0u8; 6];
    b.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    b.extend_from_slice(&[0u8; 16]);
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    b.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&[0u8; 32]);
    b.extend_from_slice(&0x18u16.to_be_bytes());
    b.extend_from_slice(&0xffffu16.to_be_bytes());
    assert_eq!(b.len(), 78);
    let avcc = bx(b"avcC", &[1, plc[0], plc[1], plc[2], 0xff, 0xe0, 0x00]);
    b.extend_from_slice(&avcc);
    bx(b"avc1", &b)
}

pub fn mp4a(channels: u16, rate: u16, asc: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 6];
    b.extend_from_slice(&1u16.to_be_bytes());
    b.extend_from_slice(&[0u8; 8]);
    b.extend_from_slice(&channels.to_be_bytes());
    b.extend_from_slice(&16u16.to_be_bytes());
    b.extend_from_slice(&[0u8; 4]);
    b.extend_from_slice(&(u32::from(rate) << 16).to_be_bytes());
    // ES_Descriptor(DecoderConfigDescriptor(DecoderSpecificInfo), SLConfigDescriptor)
    let dsi = cat(&[&[0x05, asc.len() as u8], asc]);
    let dcd_body = cat(&[&[0x40, 0x15, 0, 0, 0], &be32(128_000), &be32(128_000), &dsi]);
    let dcd = cat(&[&[0x04, dcd_body.len() as u8], &dcd_body]);
    let es_body = cat(&[&[0, 1, 0], &dcd, &[0x06, 1, 2]]);
    // Four-byte expandable length, as ffmpeg writes it.
    let es = cat(&[&[0x03, 0x80, 0x80, 0x80, es_body.len() as u8], &es_body]);
    b.extend_from_slice(&full(b"esds", 0, 0, &es));
    bx(b"mp4a", &b)
}

pub struct TrackSpec {
    pub track_id: u32,
    pub timescale: u32,
    pub entry: Entry,
    /// trex default_sample_duration and default_sample_flags.
    pub trex: Option<(u32, u32)>,
}

pub fn video_spec() -> TrackSpec {
    TrackSpec {
        track_id: 1,
        timescale: 15360,
        entry: Entry::Avc {
            width: 1280,
            height: 720,
            plc: [0x64, 0x00, 0x1f],
        },
        trex: Some((0, 0x0001_0000)),
    }
}

pub fn audio_spec() -> TrackSpec {
    TrackSpec {
        track_id: 1,
        timescale: 48000,
        entry: Entry::Aac {
            channels: 2,
            rate: 48000,
            asc: vec![0x11, 0x90], // AAC-LC, 48 kHz, 2 channels
        },
        trex: Some((1024, 0)),
    }
}

pub fn trak(spec: &TrackSpec) -> Vec<u8> {
    let (handler, entry) = match &spec.entry {
        Entry::Avc { width, height, plc } => (b"vide", avc1(*width, *height, *plc)),
        Entry::Aac {
            channels,
            rate,
            asc,
        } => (b"soun", mp4a(*channels, *rate, asc)),
        Entry::Raw(raw) => (b"vide", raw.clone()),
    };
    let (w, h) = match &spec.entry {
        Entry::Avc { width, height, .. } => (u32::from(*width) << 16, u32::from(*height) << 16),
        _ => (0, 0),
    };
    let mut tkhd = vec![0u8; 8];
    tkhd.extend_from_slice(&be32(spec.track_id));
    tkhd.extend_from_slice(&[0u8; 8]); // reserved, duration
    tkhd.extend_from_slice(&[0u8; 16]); // reserved, layer, group, volume, reserved
    tkhd.extend_from_slice(&[0u8; 36]); // matrix
    tkhd.extend_from_slice(&be32(w));
    tkhd.extend_from_slice(&be32(h));
    let tkhd = full(b"tkhd", 0, 3, &tkhd);
    let mdhd = full(
        b"mdhd",
        0,
        0,
        &cat(&[
            &[0u8; 8],
            &be32(spec.timescale),
            &be32(0),
            &[0x55, 0xc4, 0, 0],
        ]),
    );
    let hdlr = full(
        b"hdlr",
        0,
        0,
        &cat(&[&[0u8; 4], handler, &[0u8; 12], b"Handler\0"]),
    );
    let stsd = full(b"stsd", 0, 0, &cat(&[&be32(1), &entry]));
    let stbl = bx(
        b"stbl",
        &cat(&[
            &stsd,
            &full(b"stts", 0, 0, &be32(0)),
            &full(b"stsc", 0, 0, &be32(0)),
            &full(b"stsz", 0, 0, &[0u8; 8]),
            &full(b"stco", 0, 0, &be32(0)),
        ]),
    );
    let minf = bx(b"minf", &stbl);
    let mdia = bx(b"mdia", &cat(&[&mdhd, &hdlr, &minf]));
    bx(b"trak", &cat(&[&tkhd, &mdia]))
}

pub fn moov_with(traks: &[Vec<u8>], spec: &TrackSpec) -> Vec<u8> {
    let mvhd = full(b"mvhd", 0, 0, &[0u8; 96]);
    let mut body = mvhd;
    for t in traks {
        body.extend_from_slice(t);
    }
    if let Some((dur, flags)) = spec.trex {
        let trex = full(
            b"trex",
            0,
            0,
            &cat(&[
                &be32(spec.track_id),
                &be32(1),
                &be32(dur),
                &be32(0),
                &be32(flags),
            ]),
        );
        body.extend_from_slice(&bx(b"mvex", &trex));
    }
    body.extend_from_slice(&bx(b"udta", &[]));
    bx(b"moov", &body)
}

pub fn init(spec: &TrackSpec) -> Vec<u8> {
    cat(&[&ftyp(), &moov_with(&[trak(spec)], spec)])
}

/// One trun sample; `None` fields are omitted (flag cleared) for all samples of the run.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub duration: Option<u32>,
    pub size: Option<u32>,
    pub flags: Option<u32>,
    pub cto: Option<i32>,
}

pub struct Frag {
    pub seq: u32,
    pub track_id: u32,
    pub tfdt: u64,
    pub tfdt_v1: bool,
    /// tfhd default duration / flags.
    pub tfhd_duration: Option<u32>,
    pub tfhd_flags: Option<u32>,
    pub first_sample_flags: Option<u32>,
    pub trun_version: u8,
    pub samples: Vec<Sample>,
    pub payload: usize,
}

impl Frag {
    pub fn new(seq: u32, tfdt: u64, samples: Vec<Sample>) -> Self {
        Self {
            seq,
            track_id: 1,
            tfdt,
            tfdt_v1: true,
            tfhd_duration: None,
            tfhd_flags: None,
            first_sample_flags: None,
            trun_version: 1,
            samples,
            payload: 16,
        }
    }

    /// moof + mdat bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mfhd = full(b"mfhd", 0, 0, &be32(self.seq));
        let mut tf_flags = 0x02_0000; // default-base-is-moof
        let mut tfhd = be32(self.track_id).to_vec();
        if let Some(d) = self.tfhd_duration {
            tf_flags |= 0x08;
            tfhd.extend_from_slice(&be32(d));
        }
        if let Some(f) = self.tfhd_flags {
            tf_flags |= 0x20;
            tfhd.extend_from_slice(&be32(f));
        }
        let tfhd = full(b"tfhd", 0, tf_flags, &tfhd);
        let tfdt = if self.tfdt_v1 {
            full(b"tfdt", 1, 0, &self.tfdt.to_be_bytes())
        } else {
            full(b"tfdt", 0, 0, &be32(self.tfdt as u32))
        };
        let first = self.samples.first().copied().unwrap_or_default();
        let mut flags = 0x01; // data offset
        if self.first_sample_flags.is_some() {
            flags |= 0x04;
        }
        if first.duration.is_some() {
            flags |= 0x100;
        }
        if first.size.is_some() {
            flags |= 0x200;
        }
        if first.flags.is_some() {
            flags |= 0x400;
        }
        if first.cto.is_some() {
            flags |= 0x800;
        }
        let mut trun = be32(self.samples.len() as u32).to_vec();
        trun.extend_from_slice(&be32(0)); // data offset, not checked by the parser
        if let Some(f) = self.first_sample_flags {
            trun.extend_from_slice(&be32(f));
        }
        for s in &self.samples {
            for v in [s.duration, s.size, s.flags].into_iter().flatten() {
                trun.extend_from_slice(&be32(v));
            }
            if let Some(c) = s.cto {
                trun.extend_from_slice(&c.to_be_bytes());
            }
        }
        let trun = full(b"trun", self.trun_version, flags, &trun);
        let traf = bx(b"traf", &cat(&[&tfhd, &tfdt, &trun]));
        let moof = bx(b"moof", &cat(&[&mfhd, &traf]));
        cat(&[&moof, &bx(b"mdat", &vec![0xab; self.payload])])
    }
}

/// Video-like sample list: durations `d`, first sample sync, the rest non-sync, ctos given.
pub fn video_samples(d: u32, ctos: &[i32]) -> Vec<Sample> {
    ctos.iter()
        .enumerate()
        .map(|(i, &c)| Sample {
            duration: Some(d),
            size: Some(100),
            flags: Some(if i == 0 { 0x0200_0000 } else { 0x0101_0000 }),
            cto: Some(c),
        })
        .collect()
}

/// Deterministic xorshift generator for garbage-input tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
