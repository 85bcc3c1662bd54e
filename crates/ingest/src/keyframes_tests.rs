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
