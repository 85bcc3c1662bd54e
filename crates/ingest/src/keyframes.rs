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
pub(crate) mod tests {
    use super::*;
    use crate::flv::{self, TAG_AUDIO, TAG_SCRIPT};
    use proptest::prelude::*;

    // ---- FLV ----

    fn tag(tag_type: u8, body: &[u8]) -> Vec<u8> {
        flv::tag(tag_type, 1234, body).unwrap().to_vec()
    }

    fn flv_count(chunks: &[Vec<u8>]) -> Vec<u32> {
        let mut s = KeyframeScanner::new(Container::Flv);
        chunks.iter().map(|c| s.scan(c)).collect()
    }

    fn video(body: &[u8]) -> u32 {
        flv_count(&[tag(TAG_VIDEO, body)])[0]
    }

    #[test]
    fn flv_avc_keyframe_nalu_counts() {
        assert_eq!(video(&[0x17, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88]), 1);
        // Even without its PreviousTagSize the whole body is there.
        let mut t = tag(TAG_VIDEO, &[0x17, 0x01, 0, 0, 0]);
        t.truncate(t.len() - 4);
        assert_eq!(flv_count(&[t]), [1]);
    }

    #[test]
    fn flv_avc_sequence_header_and_end_of_sequence_do_not_count() {
        assert_eq!(video(&[0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1f]), 0);
        assert_eq!(video(&[0x17, 0x02, 0, 0, 0]), 0);
        // No AVCPacketType at all.
        assert_eq!(video(&[0x17]), 0);
    }

    #[test]
    fn flv_inter_frames_do_not_count() {
        assert_eq!(video(&[0x27, 0x01, 0, 0, 0, 0x41]), 0); // AVC inter
        assert_eq!(video(&[0x37, 0x01, 0, 0, 0]), 0); // AVC disposable inter
        assert_eq!(video(&[0x57, 0x01]), 0); // video info / command frame
        assert_eq!(video(&[0x22, 0xAA]), 0); // Sorenson H.263 inter
    }

    #[test]
    fn flv_legacy_hevc_and_other_codecs() {
        assert_eq!(video(&[0x1C, 0x01, 0, 0, 0]), 1);
        assert_eq!(video(&[0x1C, 0x00, 0, 0, 0]), 0);
        assert_eq!(video(&[0x12, 0xAA]), 1); // Sorenson H.263 keyframe
        assert_eq!(video(&[0x14, 0x00, 0xAA]), 1); // VP6 keyframe
    }

    #[test]
    fn flv_enhanced_rtmp() {
        let ex = |frame_type: u8, packet_type: u8, fourcc: &[u8; 4]| {
            let mut body = vec![0x80 | (frame_type << 4) | packet_type];
            body.extend_from_slice(fourcc);
            body.extend_from_slice(&[0, 0, 0, 0x26, 0x01]);
            video(&body)
        };
        assert_eq!(ex(1, 3, b"hvc1"), 1, "CodedFramesX keyframe");
        assert_eq!(ex(1, 1, b"hvc1"), 1, "CodedFrames keyframe");
        assert_eq!(ex(1, 1, b"av01"), 1);
        assert_eq!(ex(1, 0, b"hvc1"), 0, "SequenceStart");
        assert_eq!(ex(1, 2, b"hvc1"), 0, "SequenceEnd");
        assert_eq!(ex(1, 4, b"hvc1"), 0, "Metadata");
        assert_eq!(ex(1, 6, b"hvc1"), 0, "Multitrack");
        assert_eq!(ex(2, 3, b"hvc1"), 0, "inter frame");
        assert_eq!(ex(5, 1, b"hvc1"), 0, "command frame");
        // An extended header cut before its FourCC.
        assert_eq!(video(&[0x93, b'h', b'v']), 0);
    }

    #[test]
    fn flv_header_audio_and_script_tags_do_not_count() {
        let chunks = [
            flv::header().to_vec(),
            tag(TAG_AUDIO, &[0x17, 0x01, 0, 0, 0]), // a keyframe's bytes, but audio
            tag(TAG_AUDIO, &[0xAF, 0x01, 0x21]),
            tag(TAG_SCRIPT, &[0x17, 0x01]),
            tag(TAG_VIDEO, &[0x17, 0x00, 1, 2]),
            tag(TAG_VIDEO, &[0x17, 0x01, 0, 0, 0]),
            tag(TAG_VIDEO, &[0x27, 0x01, 0, 0, 0]),
            tag(TAG_VIDEO, &[0x17, 0x01, 0, 0, 0]),
        ];
        assert_eq!(flv_count(&chunks), [0, 0, 0, 0, 0, 1, 0, 1]);
    }

    #[test]
    fn flv_truncated_tags_count_nothing() {
        let whole = tag(TAG_VIDEO, &[0x17, 0x01, 0, 0, 0, 0x65]);
        // Cut anywhere before the end of the body.
        for len in 0..11 + 6 {
            assert_eq!(flv_count(&[whole[..len].to_vec()]), [0], "cut at {len}");
        }
        // A size field far beyond the chunk.
        let mut huge = whole.clone();
        huge[1..4].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        assert_eq!(flv_count(&[huge]), [0]);
        // An empty video body.
        assert_eq!(video(&[]), 0);
        assert_eq!(flv_count(&[Vec::new()]), [0]);
    }

    // ---- MPEG-TS ----

    const PMT_PID: u16 = 0x1000;
    pub(crate) const VIDEO: u16 = 0x100;
    const AUDIO: u16 = 0x101;

    /// A long-form PSI section with a valid CRC.
    fn section(table_id: u8, id_ext: u16, body: &[u8]) -> Vec<u8> {
        let len = 5 + body.len() + 4;
        let mut s = vec![table_id, 0xB0 | (len >> 8) as u8, len as u8];
        s.extend_from_slice(&id_ext.to_be_bytes());
        s.extend_from_slice(&[0xC1, 0, 0]); // version 0, current, section 0 of 0
        s.extend_from_slice(body);
        let crc = crc32_mpeg2(&s);
        s.extend_from_slice(&crc.to_be_bytes());
        s
    }

    fn pid_bytes(pid: u16) -> [u8; 2] {
        (0xE000 | pid).to_be_bytes()
    }

    fn pat_section(pmt_pid: u16) -> Vec<u8> {
        let mut body = vec![0, 0];
        body.extend_from_slice(&pid_bytes(0x10)); // program 0: network PID
        body.extend_from_slice(&[0, 1]);
        body.extend_from_slice(&pid_bytes(pmt_pid));
        section(0x00, 1, &body)
    }

    /// A PMT for program 1 listing `streams` (stream type, PID), each with one descriptor.
    fn pmt_section(streams: &[(u8, u16)]) -> Vec<u8> {
        let mut body = pid_bytes(VIDEO).to_vec(); // PCR PID
        body.extend_from_slice(&[0xF0, 0x00]); // no program descriptors
        for &(stream_type, pid) in streams {
            body.push(stream_type);
            body.extend_from_slice(&pid_bytes(pid));
            body.extend_from_slice(&[0xF0, 0x06, 0x0A, 0x04, b'e', b'n', b'g', 0]);
        }
        section(0x02, 1, &body)
    }

    /// Audio first, so "first video stream" has to skip it.
    fn pmt_av() -> Vec<u8> {
        pmt_section(&[(0x0F, AUDIO), (0x1B, VIDEO)])
    }

    /// A payload-only packet, 0xFF-stuffed.
    fn packet(pid: u16, pusi: bool, payload: &[u8]) -> Vec<u8> {
        let [hi, lo] = pid.to_be_bytes();
        let mut p = vec![TS_SYNC, (u8::from(pusi) << 6) | (hi & 0x1f), lo, 0x10];
        p.extend_from_slice(payload);
        p.resize(TS_PACKET, 0xFF);
        p
    }

    /// A packet starting the section `s` after a pointer field of `pointer` filler bytes.
    fn psi(pid: u16, pointer: u8, s: &[u8]) -> Vec<u8> {
        let mut payload = vec![pointer];
        payload.resize(1 + usize::from(pointer), 0xFF);
        payload.extend_from_slice(s);
        packet(pid, true, &payload)
    }

    pub(crate) fn pat() -> Vec<u8> {
        psi(PAT_PID, 0, &pat_section(PMT_PID))
    }

    pub(crate) fn pmt() -> Vec<u8> {
        psi(PMT_PID, 0, &pmt_av())
    }

    /// A packet with an adaptation field (flags `af_flags`) and, if `pusi`, a PES header.
    pub(crate) fn af_packet(pid: u16, pusi: bool, af_flags: u8) -> Vec<u8> {
        let [hi, lo] = pid.to_be_bytes();
        let mut p = vec![TS_SYNC, (u8::from(pusi) << 6) | (hi & 0x1f), lo, 0x30];
        let payload: &[u8] = if pusi {
            &[
                0, 0, 1, 0xE0, 0, 0, 0x80, 0x80, 5, 0x21, 0, 1, 0, 1, 0, 0, 0, 1, 0x09,
            ]
        } else {
            &[0x47; 20]
        };
        let af_len = TS_PACKET - 5 - payload.len();
        p.push(af_len as u8);
        p.push(af_flags);
        p.resize(5 + af_len, 0xFF);
        p.extend_from_slice(payload);
        assert_eq!(p.len(), TS_PACKET);
        p
    }

    /// A PES start with random_access_indicator: what muxers write for a keyframe.
    fn key(pid: u16) -> Vec<u8> {
        af_packet(pid, true, 0x40)
    }

    /// A PES start without it.
    fn delta(pid: u16) -> Vec<u8> {
        af_packet(pid, true, 0x00)
    }

    /// A continuation packet (payload only, no PES start).
    fn cont(pid: u16) -> Vec<u8> {
        packet(pid, false, &[0x47; 184])
    }

    fn ts_counts(chunks: &[Vec<u8>]) -> Vec<u32> {
        let mut s = KeyframeScanner::new(Container::MpegTs);
        chunks.iter().map(|c| s.scan(c)).collect()
    }

    fn ts_total(stream: &[u8], chunk: usize) -> u32 {
        let mut s = KeyframeScanner::new(Container::MpegTs);
        stream.chunks(chunk).map(|c| s.scan(c)).sum()
    }

    #[test]
    fn ts_keyframes_on_the_video_pid_count() {
        let chunk = [
            pat(),
            pmt(),
            key(VIDEO),
            cont(VIDEO),
            delta(VIDEO),
            cont(VIDEO),
            key(VIDEO),
        ]
        .concat();
        assert_eq!(ts_counts(&[chunk]), [2]);
        assert_eq!(
            ts_counts(&[
                [pat(), pmt()].concat(),
                key(VIDEO),
                delta(VIDEO),
                key(VIDEO)
            ]),
            [0, 1, 0, 1]
        );
    }

    #[test]
    fn ts_rai_elsewhere_does_not_count() {
        let chunk = [
            pat(),
            pmt(),
            key(AUDIO),
            key(0x200),                    // a PID the PMT does not list
            af_packet(VIDEO, false, 0x40), // RAI without a PES start
            key(PMT_PID),
            key(PAT_PID),
        ]
        .concat();
        assert_eq!(ts_counts(&[chunk]), [0]);
    }

    #[test]
    fn ts_nothing_counts_before_the_pmt() {
        assert_eq!(
            ts_counts(&[key(VIDEO), pat(), key(VIDEO), pmt(), key(VIDEO)]),
            [0, 0, 0, 0, 1]
        );
        // A PMT before the PAT that names its PID is not read.
        assert_eq!(
            ts_counts(&[pmt(), key(VIDEO), pat(), key(VIDEO)]),
            [0, 0, 0, 0]
        );
    }

    #[test]
    fn ts_a_packet_split_across_chunks_counts_once() {
        let stream = [pat(), pmt(), key(VIDEO), delta(VIDEO), key(VIDEO)].concat();
        let cut = 2 * TS_PACKET + 100;
        assert_eq!(
            ts_counts(&[stream[..cut].to_vec(), stream[cut..].to_vec()]),
            [0, 2]
        );
        // Any chunk size, down to one byte at a time.
        for chunk in [1, 7, 100, 187, 188, 189, 500, 1316, 4096] {
            assert_eq!(ts_total(&stream, chunk), 2, "chunks of {chunk}");
        }
    }

    #[test]
    fn ts_garbage_before_a_sync_byte_is_skipped() {
        // The stray 0x47 is not followed by another 188 bytes on: not a packet.
        let mut chunk = vec![0x00, 0x12, TS_SYNC, 0x40, 0x00, 0x10, 0x99];
        chunk.extend([pat(), pmt(), key(VIDEO)].concat());
        assert_eq!(ts_counts(&[chunk]), [1]);
        // Garbage mid-stream, then the stream goes on.
        let chunk = [pat(), pmt(), vec![1, 2, 3], key(VIDEO), key(VIDEO)].concat();
        assert_eq!(ts_counts(&[chunk]), [2]);
        // A garbage tail that looks like a packet start is dropped when the next chunk
        // starts aligned.
        let a = [pat(), pmt(), vec![TS_SYNC, 0x41, 0x00]].concat();
        let b = [key(VIDEO), key(VIDEO)].concat();
        assert_eq!(ts_counts(&[a, b]), [0, 2]);
    }

    #[test]
    fn ts_sections_after_a_pointer_field() {
        let chunk = [
            psi(PAT_PID, 3, &pat_section(PMT_PID)),
            psi(PMT_PID, 17, &pmt_av()),
            key(VIDEO),
        ]
        .concat();
        assert_eq!(ts_counts(&[chunk]), [1]);
        // A pointer field past the end of the packet.
        let mut bad = pat();
        bad[4] = 200;
        assert_eq!(ts_counts(&[[bad, pmt(), key(VIDEO)].concat()]), [0]);
    }

    #[test]
    fn ts_pmt_stream_choice() {
        // Keyframes counted on (VIDEO, AUDIO) under a PMT listing `streams`.
        let with = |streams: &[(u8, u16)]| {
            let start = [pat(), psi(PMT_PID, 0, &pmt_section(streams))].concat();
            let counts = ts_counts(&[start, key(VIDEO), key(AUDIO)]);
            (counts[1], counts[2])
        };
        for video_type in VIDEO_STREAM_TYPES {
            assert_eq!(with(&[(video_type, VIDEO)]), (1, 0), "{video_type:#x}");
        }
        // Private data is not video; the first video stream wins.
        assert_eq!(with(&[(0x06, AUDIO), (0x24, VIDEO)]), (1, 0));
        assert_eq!(with(&[(0x06, VIDEO), (0x0F, AUDIO)]), (0, 0));
        assert_eq!(with(&[(0x1B, AUDIO), (0x1B, VIDEO)]), (0, 1));
        assert_eq!(with(&[]), (0, 0));
    }

    #[test]
    fn ts_damaged_or_oversized_sections_are_ignored() {
        let mut bad_crc = pmt();
        bad_crc[14] ^= 0x01; // the PCR PID: still a well-formed PMT
        assert_eq!(ts_counts(&[[pat(), bad_crc, key(VIDEO)].concat()]), [0]);
        // A section that claims to go on into the next packet.
        let mut long = pmt();
        long[6] = 0xB3;
        long[7] = 0xFD;
        let chunk = [pat(), long, cont(PMT_PID), key(VIDEO)].concat();
        assert_eq!(ts_counts(&[chunk]), [0]);
        // Truncated and empty sections.
        for n in 0..24 {
            let chunk = [pat(), psi(PMT_PID, 0, &pmt_av()[..n]), key(VIDEO)].concat();
            assert_eq!(ts_counts(&[chunk]), [0], "{n} bytes");
        }
        // An adaptation field longer than the packet.
        let mut af = key(VIDEO);
        af[4] = 250;
        assert_eq!(ts_counts(&[[pat(), pmt(), af].concat()]), [0]);
        // A packet flagged as damaged.
        let mut tei = key(VIDEO);
        tei[1] |= 0x80;
        assert_eq!(ts_counts(&[[pat(), pmt(), tei].concat()]), [0]);
    }

    #[test]
    fn ts_a_new_pat_needs_a_new_pmt() {
        let other = psi(PAT_PID, 0, &pat_section(0x1001));
        let pmt2 = psi(0x1001, 0, &pmt_av());
        assert_eq!(
            ts_counts(&[
                [pat(), pmt(), key(VIDEO)].concat(),
                [other, key(VIDEO)].concat(),
                [pmt2, key(VIDEO)].concat(),
            ]),
            [1, 0, 1]
        );
    }

    #[test]
    fn debug_shows_state_not_bytes() {
        let mut s = KeyframeScanner::new(Container::MpegTs);
        s.scan(&[pat(), pmt(), key(VIDEO)[..10].to_vec()].concat());
        let shown = format!("{s:?}");
        assert!(shown.contains("MpegTs"), "{shown}");
        assert!(shown.contains("video_pid: Some(256)"), "{shown}");
        assert!(shown.contains("carried: 10"), "{shown}");
        let shown = format!("{:?}", KeyframeScanner::new(Container::Flv));
        assert!(shown.contains("Flv"), "{shown}");
    }

    #[test]
    fn crc_matches_known_value() {
        // CRC-32/MPEG-2 check value.
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    }

    // ---- real encoder output ----

    /// 4 s of 30 fps H.264 with a keyframe every 30 frames, as ffmpeg muxes it into `format`;
    /// `None` (after saying so) only if ffmpeg is not installed.
    fn ffmpeg(format: &str) -> Option<Vec<u8>> {
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
            .args(["-f", "lavfi", "-i", "testsrc=size=160x120:rate=30"])
            .args(["-t", "4"])
            .args(["-c:v", "libx264", "-g", "30", "-f", format, "-"])
            .output();
        let out = match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("skipped: ffmpeg is not on PATH");
                return None;
            }
            r => r.expect("run ffmpeg"),
        };
        assert!(
            out.status.success(),
            "ffmpeg failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out.stdout)
    }

    /// An FLV file cut the way the RTMP ingest delivers it: header, then one tag per chunk.
    fn flv_chunks(file: &[u8]) -> Vec<&[u8]> {
        let (header, mut rest) = file.split_at(13);
        let mut chunks = vec![header];
        while rest.len() >= 11 {
            let size = u32::from_be_bytes([0, rest[1], rest[2], rest[3]]) as usize;
            let (tag, after) = rest.split_at((11 + size + 4).min(rest.len()));
            chunks.push(tag);
            rest = after;
        }
        assert!(rest.is_empty(), "{} bytes left over", rest.len());
        chunks
    }

    #[test]
    fn ffmpeg_output_has_one_keyframe_per_second() {
        let Some(ts) = ffmpeg("mpegts") else { return };
        let in_srt_payloads = ts_total(&ts, 1316);
        assert!(
            (3..=5).contains(&in_srt_payloads),
            "{in_srt_payloads} keyframes in MPEG-TS"
        );
        assert_eq!(ts_total(&ts, 1000), in_srt_payloads, "unaligned chunks");

        let Some(file) = ffmpeg("flv") else { return };
        let mut s = KeyframeScanner::new(Container::Flv);
        let in_tags: u32 = flv_chunks(&file).into_iter().map(|c| s.scan(c)).sum();
        assert_eq!(in_tags, in_srt_payloads, "same encode, muxed as FLV");
        println!("{in_srt_payloads} keyframes in both containers");
    }

    // ---- properties ----

    /// Pieces of a transport stream, valid and not.
    fn ts_piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            1 => Just(pat()),
            1 => Just(pmt()),
            4 => Just(key(VIDEO)),
            1 => Just(delta(VIDEO)),
            1 => Just(key(AUDIO)),
            1 => Just(cont(VIDEO)),
            1 => proptest::collection::vec(any::<u8>(), 0..200),
            1 => proptest::collection::vec(any::<u8>(), TS_PACKET - 1).prop_map(|mut p| {
                p.insert(0, TS_SYNC);
                p
            }),
        ]
    }

    /// `stream` cut at `cuts` (positions anywhere in it).
    fn cut<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        at.push(0);
        at.push(stream.len());
        at.sort_unstable();
        at.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
    }

    proptest! {
        /// Arbitrary bytes never panic either scanner; a TS count never exceeds the packets
        /// the chunk could complete, and an FLV chunk is one tag.
        #[test]
        fn garbage_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..2000), 0..8)) {
            let mut ts = KeyframeScanner::new(Container::MpegTs);
            let mut flv = KeyframeScanner::new(Container::Flv);
            for c in &chunks {
                prop_assert!(ts.scan(c) as usize <= c.len() / TS_PACKET + 1);
                prop_assert!(flv.scan(c) <= 1);
            }
        }

        /// Streams mixing real packets (mostly keyframes) with garbage, cut anywhere: never a
        /// panic, and never more per chunk than the packets it could complete.
        #[test]
        fn mixed_ts_counts_are_bounded(
            pieces in proptest::collection::vec(ts_piece(), 0..40),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let stream = pieces.concat();
            let mut s = KeyframeScanner::new(Container::MpegTs);
            for c in cut(&stream, &cuts) {
                prop_assert!(s.scan(c) as usize <= c.len() / TS_PACKET + 1);
            }
        }

        /// A clean stream counts the same however it is cut: every keyframe after the PAT and
        /// then the PMT, once.
        #[test]
        fn clean_ts_counts_do_not_depend_on_chunking(
            kinds in proptest::collection::vec(0u8..6, 0..60),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let (mut pat_seen, mut pmt_seen, mut expected) = (false, false, 0);
            let mut stream = Vec::new();
            for k in kinds {
                let p = match k {
                    0 => { pat_seen = true; pat() }
                    1 => { pmt_seen |= pat_seen; pmt() }
                    2 => { expected += u32::from(pmt_seen); key(VIDEO) }
                    3 => delta(VIDEO),
                    4 => key(AUDIO),
                    _ => cont(VIDEO),
                };
                stream.extend(p);
            }
            let mut s = KeyframeScanner::new(Container::MpegTs);
            let total: u32 = cut(&stream, &cuts).into_iter().map(|c| s.scan(c)).sum();
            prop_assert_eq!(total, expected);
        }
    }
}
