//! Finds video keyframes in a publisher's media as the ingest hands it over, so the live
//! dashboard can show the keyframe interval and alert when a publisher sends none for too long.
//! Pure, no I/O.
//!
//! Publishers are untrusted: whatever the bytes, scanning never panics and a scanner's memory
//! stays the same size (a carry buffer under one TS packet, two PIDs, no tables that grow).
//!
//! * [`Container::Flv`]: a video tag is a keyframe when its frame type is 1 (key) and it carries
//!   coded pictures, not a codec sequence header, metadata or end of sequence. Both the legacy
//!   header and Enhanced RTMP's extended header are understood.
//! * [`Container::MpegTs`]: the first video stream of the first program (PAT, then PMT) has a
//!   keyframe where a PES packet starts in a TS packet whose adaptation field sets
//!   `random_access_indicator`, which is how ffmpeg's and OBS's muxers mark keyframes. An
//!   encoder that never sets that flag shows no keyframes at all.

use std::fmt;

use crate::{flv::TAG_VIDEO, Container};

/// Size of an MPEG-TS packet.
const TS_PACKET: usize = 188;
/// First byte of every MPEG-TS packet.
const TS_SYNC: u8 = 0x47;
/// PID of the program association table.
const PAT_PID: u16 = 0;
/// PMT stream types that are video: MPEG-1, MPEG-2, MPEG-4 part 2, H.264, HEVC, VVC, AVS.
/// (0x06, private data, is not: it carries subtitles, Opus, AC-3 and the like.)
const VIDEO_STREAM_TYPES: [u8; 7] = [0x01, 0x02, 0x10, 0x1B, 0x24, 0x33, 0x42];

/// Counts video keyframes in one publisher's [`crate::MediaStream`], chunk by chunk.
///
/// Create one per publisher and feed it every chunk in order: MPEG-TS needs the PAT and PMT
/// seen earlier and the tail of a packet split across chunks.
pub struct KeyframeScanner {
    inner: Inner,
}

enum Inner {
    Flv,
    /// Boxed: about 200 bytes that an FLV scanner need not carry.
    Ts(Box<TsScanner>),
}

impl KeyframeScanner {
    /// A scanner for a stream in `container`, before its first chunk.
    pub fn new(container: Container) -> Self {
        let inner = match container {
            Container::Flv => Inner::Flv,
            Container::MpegTs => Inner::Ts(Box::new(TsScanner::new())),
        };
        Self { inner }
    }

    /// Feeds the next chunk; returns how many video keyframes start in it.
    ///
    /// FLV: 0 or 1, since each chunk is one tag (the file header counts 0). MPEG-TS: a keyframe
    /// whose TS packet is split across chunks counts once, in the chunk that completes the packet.
    pub fn scan(&mut self, chunk: &[u8]) -> u32 {
        match &mut self.inner {
            Inner::Flv => u32::from(flv_tag_is_keyframe(chunk)),
            Inner::Ts(ts) => ts.scan(chunk),
        }
    }
}

impl fmt::Debug for KeyframeScanner {
    /// The state, without the carried bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("KeyframeScanner");
        match &self.inner {
            Inner::Flv => d.field("container", &Container::Flv),
            Inner::Ts(ts) => d
                .field("container", &Container::MpegTs)
                .field("pmt_pid", &ts.program.map(|p| p.pmt_pid))
                .field("video_pid", &ts.video_pid)
                .field("in_sync", &ts.in_sync)
                .field("carried", &ts.carry_len),
        }
        .finish()
    }
}

/// Whether one FLV tag (header, body, optional `PreviousTagSize`) is a video keyframe. Anything
/// that is not a whole video tag (the file header, audio, script data, a truncated tag) is not.
fn flv_tag_is_keyframe(tag: &[u8]) -> bool {
    const HEADER: usize = 11;
    let Some(header) = tag.get(..HEADER) else {
        return false;
    };
    // The file header starts with b'F' (0x46), so it never looks like a video tag.
    if header[0] != TAG_VIDEO {
        return false;
    }
    let size = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
    tag.get(HEADER..HEADER + size)
        .is_some_and(video_body_is_keyframe)
}

/// Whether an FLV video tag body holds a keyframe's coded picture.
fn video_body_is_keyframe(body: &[u8]) -> bool {
    let Some(&first) = body.first() else {
        return false;
    };
    if first & 0x80 != 0 {
        // Enhanced RTMP: IsExHeader, FrameType (3 bits), PacketType (4 bits), then a FourCC.
        // Only CodedFrames (1) and CodedFramesX (3) hold pictures; SequenceStart (0), End (2),
        // Metadata (4) and the rest do not. Multitrack (6) packets, which OBS uses for tracks
        // beyond the first, are not unpacked: the first track alone sets the keyframe interval.
        let frame_type = (first >> 4) & 0x07;
        let packet_type = first & 0x0f;
        return body.len() >= 5 && frame_type == 1 && matches!(packet_type, 1 | 3);
    }
    // Legacy: FrameType (4 bits), CodecID (4 bits). AVC (7) and the widespread non-standard
    // HEVC (12) add an AVCPacketType: 0 is the sequence header, 1 a NALU, 2 end of sequence.
    let frame_type = first >> 4;
    match first & 0x0f {
        7 | 12 => frame_type == 1 && body.get(1) == Some(&1),
        _ => frame_type == 1,
    }
}

/// The program the PAT names first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Program {
    number: u16,
    pmt_pid: u16,
}

/// MPEG-TS state: constant size whatever the input.
struct TsScanner {
    /// Start of a packet that the previous chunk cut off (from its sync byte on).
    carry: [u8; TS_PACKET - 1],
    carry_len: usize,
    /// Whether the previous packet ended where the next one must start. While not, a sync
    /// byte only starts a packet if another follows 188 bytes later (when that byte is here),
    /// so a stray 0x47 in garbage is not taken for a packet.
    in_sync: bool,
    /// From the latest PAT.
    program: Option<Program>,
    /// From the latest PMT of `program`; `None` until then, so nothing counts before it.
    video_pid: Option<u16>,
}

impl TsScanner {
    fn new() -> Self {
        Self {
            carry: [0; TS_PACKET - 1],
            carry_len: 0,
            in_sync: false,
            program: None,
            video_pid: None,
        }
    }

    fn scan(&mut self, chunk: &[u8]) -> u32 {
        let mut count = 0;
        let mut pos = 0;
        if self.carry_len > 0 {
            let have = self.carry_len.min(TS_PACKET - 1);
            let need = TS_PACKET - have;
            let Some(head) = chunk.get(..need) else {
                // Still short of a whole packet: keep collecting (stays under 188 bytes).
                let end = have + chunk.len();
                self.carry[have..end].copy_from_slice(chunk);
                self.carry_len = end;
                return 0;
            };
            self.carry_len = 0;
            // The carried bytes are only a packet's start if the next packet's sync byte
            // follows them (where this chunk has that byte); otherwise drop them and resync.
            if chunk.get(need).is_none_or(|&b| b == TS_SYNC) {
                let mut packet = [0; TS_PACKET];
                packet[..have].copy_from_slice(&self.carry[..have]);
                packet[have..].copy_from_slice(head);
                count += u32::from(self.packet(&packet));
                pos = need;
                self.in_sync = true;
            } else {
                self.in_sync = false;
            }
        }
        while let Some(rest) = chunk.get(pos..).filter(|r| !r.is_empty()) {
            if rest[0] != TS_SYNC {
                self.in_sync = false;
                pos += 1;
                continue;
            }
            let Some((packet, after)) = rest.split_first_chunk::<TS_PACKET>() else {
                // The chunk ends mid-packet: keep its start (under 188 bytes) for the next one.
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len();
                break;
            };
            if !self.in_sync && after.first().is_some_and(|&b| b != TS_SYNC) {
                pos += 1;
                continue;
            }
            self.in_sync = true;
            count += u32::from(self.packet(packet));
            pos += TS_PACKET;
        }
        count
    }

    /// Reads one packet; true if it starts a keyframe on the video PID.
    fn packet(&mut self, p: &[u8; TS_PACKET]) -> bool {
        // transport_error_indicator: the sender itself says the packet is damaged.
        if p[1] & 0x80 != 0 {
            return false;
        }
        let pusi = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let control = (p[3] >> 4) & 0x03;
        let (rai, payload_at) = if control & 0x02 != 0 {
            let len = usize::from(p[4]);
            (len > 0 && p[5] & 0x40 != 0, 5 + len)
        } else {
            (false, 4)
        };
        // Everything read here begins in a packet that starts a payload unit: a PSI section
        // (PAT, PMT) or a PES packet. An adaptation field longer than the packet is garbage.
        let payload = match p.get(payload_at..) {
            Some(payload) if control & 0x01 != 0 && pusi && !payload.is_empty() => payload,
            _ => return false,
        };
        if pid == PAT_PID {
            self.pat(payload);
        } else if self.program.is_some_and(|pr| pr.pmt_pid == pid) {
            self.pmt(payload);
        } else {
            return rai && self.video_pid == Some(pid);
        }
        false
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some((_, entries)) = psi_section(payload, 0x00) else {
            return;
        };
        // Program 0 is the network PID, not a program.
        let program = entries
            .chunks_exact(4)
            .map(|e| Program {
                number: u16::from_be_bytes([e[0], e[1]]),
                pmt_pid: u16::from_be_bytes([e[2] & 0x1f, e[3]]),
            })
            .find(|p| p.number != 0);
        if program != self.program {
            self.program = program;
            // The old PMT's video PID says nothing about the new program.
            self.video_pid = None;
        }
    }

    fn pmt(&mut self, payload: &[u8]) {
        // A PMT PID may carry several programs' maps: take the one the PAT named.
        match (self.program, psi_section(payload, 0x02)) {
            (Some(program), Some((number, body))) if number == program.number => {
                self.video_pid = first_video_pid(body);
            }
            _ => {}
        }
    }
}

/// The first section in a payload that starts one, if it is a current, intact `table_id`
/// section whole within this payload: its table_id_extension (PAT: transport_stream_id, PMT:
/// program_number) and its body (after the 8-byte header, before the CRC). Sections spanning
/// packets are skipped: live encoders' PATs and PMTs fit in one.
fn psi_section(payload: &[u8], table_id: u8) -> Option<(u16, &[u8])> {
    let (&pointer, rest) = payload.split_first()?;
    let start = rest.get(usize::from(pointer)..)?;
    let len = usize::from(u16::from_be_bytes([*start.get(1)? & 0x0f, *start.get(2)?]));
    // At least the 5 header bytes after the length, and the CRC.
    if len < 9 {
        return None;
    }
    let section = start.get(..3 + len)?;
    let ok = section[0] == table_id
        && section[1] & 0x80 != 0 // section_syntax_indicator
        && section[5] & 0x01 != 0 // current_next_indicator: applies now, not later
        && section[6] == 0 // section_number: the first section holds the first entries
        && crc32_mpeg2(section) == 0;
    let id_ext = u16::from_be_bytes([section[3], section[4]]);
    ok.then(|| (id_ext, &section[8..section.len() - 4]))
}

/// The PID of the first video elementary stream in a PMT body.
fn first_video_pid(body: &[u8]) -> Option<u16> {
    // PCR_PID (2 bytes), program_info_length (2), program descriptors, then the streams.
    let info_len = usize::from(u16::from_be_bytes([*body.get(2)? & 0x0f, *body.get(3)?]));
    let mut streams = body.get(4 + info_len..)?;
    while let Some(&[stream_type, pid_hi, pid_lo, len_hi, len_lo]) = streams.first_chunk::<5>() {
        if VIDEO_STREAM_TYPES.contains(&stream_type) {
            return Some(u16::from_be_bytes([pid_hi & 0x1f, pid_lo]));
        }
        let es_info_len = usize::from(u16::from_be_bytes([len_hi & 0x0f, len_lo]));
        streams = streams.get(5 + es_info_len..)?;
    }
    None
}

/// CRC-32/MPEG-2 lookup table (polynomial 0x04C11DB7, not reflected).
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ 0x04C1_1DB7
            } else {
                c << 1
            };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32/MPEG-2 of `data`. Over a whole PSI section, its trailing CRC included, it is 0 if the
/// section is intact; checking it keeps a damaged PAT from pointing the scanner elsewhere.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    data.iter().fold(0xFFFF_FFFF, |crc, &b| {
        (crc << 8) ^ CRC_TABLE[usize::from((crc >> 24) as u8 ^ b)]
    })
}

#[cfg(test)]
#[path = "keyframes_tests.rs"]
pub(crate) mod tests;
