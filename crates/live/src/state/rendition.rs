//! One rendition's packaging: fMP4 fragments from the encoder become LL-HLS parts, parts
//! become segments cut on the encoder's keyframes, and recent objects stay in memory. Plain
//! data under the session's lock: no I/O.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use oxcast_media::ladder::Rung;
use oxcast_media::mp4::{Fragment, TrackInfo};

use super::{ticks_ms, PartMeta, Segment};

/// Part bytes are kept in memory for this many recent segments (the LL-HLS window); older parts
/// come from the store.
const HOT_SEGMENTS: usize = 6;

#[derive(Debug, Default)]
pub(super) struct Open {
    pub(super) parts: Vec<PartMeta>,
    pub(super) data: Vec<u8>,
    pub(super) start_ticks: Option<u64>,
    pub(super) ticks: u64,
}

#[derive(Debug)]
pub struct RenditionState {
    pub name: String,
    /// `None` for audio.
    pub rung: Option<Rung>,
    pub track: Option<TrackInfo>,
    pub segments: Vec<Segment>,
    pub(super) open: Open,
    pub(super) epoch: u32,
    pub(super) next_number: u64,
    /// Recent parts and segments by file name.
    pub(super) hot: HashMap<String, Bytes>,
    pub(super) inits: HashMap<String, Bytes>,
    pub(super) hot_order: VecDeque<String>,
}

/// A finished segment the caller must store.
#[derive(Debug)]
pub struct Completed {
    pub name: String,
    pub data: Bytes,
    pub segment: Segment,
}

impl RenditionState {
    pub(super) fn new(name: &str, rung: Option<Rung>) -> Self {
        Self {
            name: name.to_string(),
            rung,
            track: None,
            segments: Vec::new(),
            open: Open::default(),
            epoch: 0,
            next_number: 1,
            hot: HashMap::new(),
            inits: HashMap::new(),
            hot_order: VecDeque::new(),
        }
    }

    pub(super) fn timescale(&self) -> u32 {
        self.track.as_ref().map_or(1, |t| t.timescale.max(1))
    }

    pub(super) fn begin_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
        self.open = Open::default();
    }

    /// The last segment with media and its last part (`EXT-X-RENDITION-REPORT`): the segment
    /// in progress once it has a part, else the last completed one.
    pub fn live_edge(&self) -> Option<(u64, Option<u64>)> {
        if !self.open.parts.is_empty() {
            return Some((self.next_number, Some(self.open.parts.len() as u64 - 1)));
        }
        let last = self.segments.last()?;
        Some((last.number, (last.parts.len() as u64).checked_sub(1)))
    }

    /// The index of the first segment inside a time-shift window of `window_s` seconds that
    /// ends at the live edge (0 without a window): older ones are no longer listed.
    pub fn window_start(&self, window_s: Option<f64>) -> usize {
        let Some(window) = window_s else {
            return 0;
        };
        let mut kept: f64 = self.open.parts.iter().map(|p| p.duration_s).sum();
        for (i, s) in self.segments.iter().enumerate().rev() {
            kept += s.duration_s;
            if kept > window {
                return i + 1;
            }
        }
        0
    }

    /// Peak segment bitrate so far, or the rung's nominal rate before any segment exists.
    pub fn bandwidth(&self) -> u64 {
        let measured = self
            .segments
            .iter()
            .filter(|s| s.duration_s > 0.0)
            .map(|s| (s.bytes as f64 * 8.0 / s.duration_s) as u64)
            .max();
        let nominal = self
            .rung
            .as_ref()
            .map_or(140_000, |r| u64::from(r.max_bitrate));
        measured.unwrap_or(nominal).max(1)
    }

    pub fn set_init(&mut self, epoch: u32, track: TrackInfo, data: Bytes) -> String {
        let name = format!("init-{epoch}.mp4");
        self.track = Some(track);
        self.inits.insert(name.clone(), data);
        name
    }

    /// Adds a part; returns its file name and, when it closes a segment, the segment to store.
    /// Segments are cut on the encoder's keyframes: a video part that starts with a keyframe
    /// once at least half a segment is open starts a new segment, and a segment that has
    /// reached its duration (within a quarter part) closes at once, without waiting for the
    /// next part, so it is listed as early as possible.
    pub fn add_part(
        &mut self,
        frag: &Fragment,
        data: Bytes,
        segment_s: f64,
        part_s: f64,
        wall_start_ms: i64,
    ) -> (String, Vec<Completed>) {
        let ts = f64::from(self.timescale());
        let target = (segment_s * ts) as u64;
        let mut done = Vec::new();
        let video = self.rung.is_some();
        if video && frag.starts_with_sync && self.open.ticks >= target / 2 {
            done.extend(self.close(wall_start_ms));
        }
        let number = self.next_number;
        let index = self.open.parts.len();
        let name = format!("part-{number}-{index}.m4s");
        if self.open.start_ticks.is_none() {
            self.open.start_ticks = Some(frag.base_media_decode_time);
        }
        self.open.ticks += frag.duration;
        self.open.data.extend_from_slice(&data);
        self.open.parts.push(PartMeta {
            duration_s: frag.duration as f64 / ts,
            independent: frag.starts_with_sync,
        });
        self.remember(name.clone(), data);
        if self.open.ticks + (part_s * ts / 4.0) as u64 >= target {
            done.extend(self.close(wall_start_ms));
        }
        (name, done)
    }

    /// Closes the open segment, if any (also at the end of an epoch).
    pub fn close(&mut self, wall_start_ms: i64) -> Option<Completed> {
        if self.open.parts.is_empty() {
            return None;
        }
        let open = std::mem::take(&mut self.open);
        let ts = self.timescale();
        let start = open.start_ticks.unwrap_or(0);
        let first_of_epoch = self.segments.last().is_none_or(|s| s.epoch != self.epoch);
        let segment = Segment {
            number: self.next_number,
            epoch: self.epoch,
            start_ticks: start,
            ticks: open.ticks,
            duration_s: open.ticks as f64 / f64::from(ts),
            parts: open.parts,
            discontinuity: first_of_epoch && self.epoch > 0,
            pdt_ms: wall_start_ms + ticks_ms(start, ts),
            bytes: open.data.len() as u64,
        };
        self.next_number += 1;
        let data = Bytes::from(open.data);
        let name = format!("seg-{}.m4s", segment.number);
        self.remember(name.clone(), data.clone());
        self.segments.push(segment.clone());
        Some(Completed {
            name,
            data,
            segment,
        })
    }

    /// Keeps recent objects hot; parts of old segments fall out (they stay in the store).
    fn remember(&mut self, name: String, data: Bytes) {
        self.hot.insert(name.clone(), data);
        self.hot_order.push_back(name);
        let keep_from = self.next_number.saturating_sub(HOT_SEGMENTS as u64);
        while let Some(front) = self.hot_order.front() {
            let old = segment_of(front).is_some_and(|n| n < keep_from);
            if !old {
                break;
            }
            let f = self.hot_order.pop_front().expect("front exists");
            self.hot.remove(&f);
        }
    }

    pub fn end_ticks_s(&self) -> f64 {
        self.open.ticks as f64 / f64::from(self.timescale())
    }
}

/// The segment number a part or segment file belongs to.
pub(super) fn segment_of(name: &str) -> Option<u64> {
    let rest = name
        .strip_prefix("part-")
        .or_else(|| name.strip_prefix("seg-"))?;
    rest.split(['-', '.']).next()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use oxcast_media::mp4::TrackKind;

    pub(crate) fn frag(start: u64, dur: u64, sync: bool) -> Fragment {
        Fragment {
            range: 0..0,
            sequence_number: 0,
            base_media_decode_time: start,
            duration: dur,
            sample_count: 15,
            starts_with_sync: sync,
            earliest_presentation_time: start as i64,
        }
    }

    pub(crate) fn video() -> RenditionState {
        let mut r = RenditionState::new(
            "360p",
            Some(Rung {
                name: "360p".into(),
                width: 640,
                height: 360,
                video_bitrate: 800_000,
                max_bitrate: 1_200_000,
                buffer_size: 1_600_000,
            }),
        );
        r.set_init(
            0,
            TrackInfo {
                track_id: 1,
                kind: TrackKind::Video,
                timescale: 1000,
                codec: "avc1.64001e".into(),
                width: Some(640),
                height: Some(360),
                sample_rate: None,
                channels: None,
            },
            Bytes::new(),
        );
        r
    }

    #[test]
    fn four_half_second_parts_make_a_two_second_segment_at_once() {
        let mut r = video();
        for i in 0..3 {
            let (name, done) = r.add_part(
                &frag(i * 500, 500, i == 0),
                Bytes::from_static(b"x"),
                2.0,
                0.5,
                0,
            );
            assert_eq!(name, format!("part-1-{i}.m4s"));
            assert!(done.is_empty());
        }
        let (_, done) = r.add_part(
            &frag(1500, 500, false),
            Bytes::from_static(b"y"),
            2.0,
            0.5,
            0,
        );
        assert_eq!(
            done.len(),
            1,
            "closed with its last part, not one part later"
        );
        assert_eq!(done[0].segment.number, 1);
        assert_eq!(done[0].segment.duration_s, 2.0);
        assert_eq!(&done[0].data[..], b"xxxy");
        let (name, _) = r.add_part(&frag(2000, 500, true), Bytes::new(), 2.0, 0.5, 0);
        assert_eq!(name, "part-2-0.m4s");
    }

    #[test]
    fn an_early_keyframe_starts_a_new_segment() {
        let mut r = video();
        r.add_part(&frag(0, 500, true), Bytes::new(), 2.0, 0.5, 0);
        r.add_part(&frag(500, 500, false), Bytes::new(), 2.0, 0.5, 0);
        let (name, done) = r.add_part(&frag(1000, 500, true), Bytes::new(), 2.0, 0.5, 0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].segment.duration_s, 1.0);
        assert_eq!(name, "part-2-0.m4s");
    }

    #[test]
    fn old_parts_leave_memory() {
        let mut r = video();
        for i in 0..40u64 {
            r.add_part(
                &frag(i * 500, 500, i % 4 == 0),
                Bytes::from_static(b"p"),
                2.0,
                0.5,
                0,
            );
        }
        assert!(!r.hot.contains_key("part-1-0.m4s"));
        assert!(r.hot.contains_key("part-10-3.m4s"));
        assert!(r.hot.len() <= 5 * (HOT_SEGMENTS + 1));
    }

    #[test]
    fn segment_numbers_from_names() {
        assert_eq!(segment_of("part-12-3.m4s"), Some(12));
        assert_eq!(segment_of("seg-7.m4s"), Some(7));
        assert_eq!(segment_of("init-0.mp4"), None);
    }
}
