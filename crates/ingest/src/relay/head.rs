//! What an encoder that takes a stream over must be sent first, so that it can decode at once
//! and nothing the publisher sent since its last keyframe is lost. Pure, bounded.
//!
//! * FLV: the file header, the last `onMetaData`, the last video and audio sequence headers
//!   (codec configuration), then every tag since the last video keyframe.
//! * MPEG-TS: every chunk since the one that completed the last keyframe's packet. Muxers
//!   repeat the PAT and PMT several times a second, so the decoder finds them in it.
//!
//! A publisher whose keyframes are further apart than [`Head`]'s byte limit has its GOP
//! dropped once over the limit; the next keyframe starts a new one.

use bytes::Bytes;

use crate::flv::{TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::keyframes::KeyframeScanner;
use crate::Container;

pub struct Head {
    container: Container,
    scanner: KeyframeScanner,
    file_header: Option<Bytes>,
    metadata: Option<Bytes>,
    video_config: Option<Bytes>,
    audio_config: Option<Bytes>,
    gop: Vec<Bytes>,
    gop_bytes: usize,
    /// Over the limit: nothing is kept until the next keyframe.
    overflowed: bool,
    max_bytes: usize,
}

impl Head {
    pub fn new(container: Container, max_bytes: usize) -> Self {
        Self {
            container,
            scanner: KeyframeScanner::new(container),
            file_header: None,
            metadata: None,
            video_config: None,
            audio_config: None,
            gop: Vec::new(),
            gop_bytes: 0,
            overflowed: false,
            max_bytes,
        }
    }

    /// Takes the next chunk the publisher sent (in order).
    pub fn push(&mut self, chunk: &Bytes) {
        let keyframe = self.scanner.scan(chunk) > 0;
        if self.container == Container::Flv {
            match flv_kind(chunk) {
                FlvKind::FileHeader => return self.file_header = Some(chunk.clone()),
                FlvKind::Metadata => return self.metadata = Some(chunk.clone()),
                FlvKind::VideoConfig => return self.video_config = Some(chunk.clone()),
                FlvKind::AudioConfig => return self.audio_config = Some(chunk.clone()),
                FlvKind::Media => {}
            }
        }
        if keyframe {
            self.gop.clear();
            self.gop_bytes = 0;
            self.overflowed = false;
        }
        if self.overflowed || (self.gop.is_empty() && !keyframe) {
            // Nothing decodable starts before the first keyframe.
            return;
        }
        if self.gop_bytes + chunk.len() > self.max_bytes {
            self.gop.clear();
            self.gop_bytes = 0;
            self.overflowed = true;
            return;
        }
        self.gop_bytes += chunk.len();
        self.gop.push(chunk.clone());
    }

    /// The chunks to send a new encoder, in order.
    pub fn replay(&self) -> Vec<Bytes> {
        [
            &self.file_header,
            &self.metadata,
            &self.video_config,
            &self.audio_config,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .chain(self.gop.iter().cloned())
        .collect()
    }

    /// Bytes held for the GOP.
    pub fn gop_bytes(&self) -> usize {
        self.gop_bytes
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FlvKind {
    FileHeader,
    Metadata,
    VideoConfig,
    AudioConfig,
    Media,
}

/// What an FLV chunk (the file header, or one tag) is.
fn flv_kind(chunk: &[u8]) -> FlvKind {
    if chunk.starts_with(b"FLV") {
        return FlvKind::FileHeader;
    }
    let (Some(&kind), Some(body)) = (chunk.first(), chunk.get(11..)) else {
        return FlvKind::Media;
    };
    match kind & 0x1f {
        TAG_SCRIPT => FlvKind::Metadata,
        TAG_VIDEO => match body.first() {
            // Enhanced RTMP: PacketType 0 is SequenceStart.
            Some(&b) if b & 0x80 != 0 && b & 0x0f == 0 => FlvKind::VideoConfig,
            // Legacy AVC/HEVC: AVCPacketType 0 is the sequence header.
            Some(&b) if b & 0x80 == 0 && matches!(b & 0x0f, 7 | 12) && body.get(1) == Some(&0) => {
                FlvKind::VideoConfig
            }
            _ => FlvKind::Media,
        },
        // AAC (sound format 10): AACPacketType 0 is the AudioSpecificConfig.
        TAG_AUDIO if body.first().is_some_and(|b| b >> 4 == 10) && body.get(1) == Some(&0) => {
            FlvKind::AudioConfig
        }
        _ => FlvKind::Media,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv;
    use proptest::prelude::*;

    fn video(key: bool, packet: u8, ts: u32) -> Bytes {
        let frame = if key { 0x17 } else { 0x27 };
        flv::tag(TAG_VIDEO, ts, &[frame, packet, 0, 0, 0, 1, 2, 3]).unwrap()
    }

    fn audio(packet: u8, ts: u32) -> Bytes {
        flv::tag(TAG_AUDIO, ts, &[0xAF, packet, 9, 9]).unwrap()
    }

    #[test]
    fn flv_replays_headers_then_the_gop_since_the_last_keyframe() {
        let mut h = Head::new(Container::Flv, 1 << 20);
        let file = flv::header();
        let meta = flv::tag(TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData").unwrap();
        let (vcfg, acfg) = (video(true, 0, 0), audio(0, 0));
        let first: Vec<Bytes> = vec![
            file.clone(),
            meta.clone(),
            vcfg.clone(),
            acfg.clone(),
            audio(1, 0),
            video(true, 1, 0),
            audio(1, 20),
            video(false, 1, 33),
        ];
        for c in &first {
            h.push(c);
        }
        assert_eq!(
            h.replay(),
            [&first[..4], &first[5..]].concat(),
            "audio before the first keyframe is of no use"
        );
        let (k2, a2, p2) = (video(true, 1, 1000), audio(1, 1010), video(false, 1, 1033));
        let newer_cfg = video(true, 0, 1000);
        for c in [&newer_cfg, &k2, &a2, &p2] {
            h.push(c);
        }
        assert_eq!(
            h.replay(),
            vec![file, meta, newer_cfg, acfg, k2, a2, p2],
            "a new keyframe starts a new GOP; the newest codec configuration is kept"
        );
    }

    #[test]
    fn a_gop_over_the_limit_is_dropped_until_the_next_keyframe() {
        let mut h = Head::new(Container::Flv, 60);
        h.push(&video(true, 1, 0));
        h.push(&video(false, 1, 33));
        assert_eq!(h.replay().len(), 2);
        h.push(&video(false, 1, 66));
        assert!(h.replay().is_empty(), "over 60 bytes");
        assert_eq!(h.gop_bytes(), 0);
        h.push(&video(false, 1, 99));
        assert!(h.replay().is_empty());
        h.push(&video(true, 1, 1000));
        assert_eq!(h.replay().len(), 1);
    }

    #[test]
    fn mpegts_replays_from_the_chunk_with_the_keyframe() {
        use crate::keyframes::tests::{af_packet, pat, pmt, VIDEO};
        let pes = |key: bool| Bytes::from(af_packet(VIDEO, true, if key { 0x40 } else { 0 }));
        let mut h = Head::new(Container::MpegTs, 1 << 20);
        let tables = Bytes::from([pat(), pmt()].concat());
        h.push(&tables);
        h.push(&pes(false));
        assert!(h.replay().is_empty(), "no keyframe yet");
        let (k, p) = (pes(true), pes(false));
        h.push(&k);
        h.push(&p);
        assert_eq!(h.replay(), vec![k, p]);
    }

    proptest! {
        #[test]
        fn any_chunks_stay_within_the_limit(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..40)) {
            for container in [Container::Flv, Container::MpegTs] {
                let mut h = Head::new(container, 2_000);
                for c in &chunks {
                    h.push(&Bytes::from(c.clone()));
                    prop_assert!(h.gop_bytes() <= 2_000);
                }
            }
        }
    }
}
