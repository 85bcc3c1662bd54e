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
    /// The part being written: its chunks are the tail of `data`.
    pub(super) part: Option<OpenPart>,
}

#[derive(Debug)]
pub(super) struct OpenPart {
    /// Where the part starts in the segment's bytes.
    from: usize,
    ticks: u64,
    independent: bool,
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

/// What a chunk finished: parts and segments to store, in this order.
#[derive(Debug, Default)]
pub struct Added {
    /// Finished parts, by file name.
    pub parts: Vec<(String, Bytes)>,
    pub segments: Vec<Completed>,
}

impl Added {
    fn extend(&mut self, more: Added) {
        self.parts.extend(more.parts);
        self.segments.extend(more.segments);
    }

    /// The objects to store: file names and bytes, parts before segments.
    pub fn into_writes(self) -> impl Iterator<Item = (String, Bytes)> {
        self.parts
            .into_iter()
            .chain(self.segments.into_iter().map(|c| (c.name, c.data)))
    }

    /// Whether anything is now listed that was not.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.segments.is_empty()
    }
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

    /// The number the segment in progress (or the next one) gets.
    pub fn next_number(&self) -> u64 {
        self.next_number
    }

    /// The epoch being written (or last written).
    pub fn epoch(&self) -> u32 {
        self.epoch
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

    /// Adds one CMAF chunk (one fMP4 fragment from the encoder) and returns what it finished.
    ///
    /// Chunks are a fraction of a part long, so that a part can be sent while it is written.
    /// A part ends once the next chunk (assumed as long as this one) would take it past
    /// `part_target_s`, or when a video keyframe arrives: every part that starts with a
    /// keyframe is independent. Segments are cut on the encoder's keyframes: a keyframe once at
    /// least half a segment is open starts a new segment, and a segment that has reached its
    /// duration (within a quarter part) closes with its last part, without waiting for the next
    /// chunk, so it is listed as early as possible. An encoder that writes a whole part per
    /// fragment gives one chunk per part.
    pub fn add_chunk(
        &mut self,
        frag: &Fragment,
        data: &[u8],
        segment_s: f64,
        part_target_s: f64,
        wall_start_ms: i64,
    ) -> Added {
        let ts = f64::from(self.timescale());
        let target = (segment_s * ts) as u64;
        let limit = (part_target_s * ts) as u64;
        let mut out = Added::default();
        if self.rung.is_some() && frag.starts_with_sync {
            out.parts.extend(self.finish_part());
            if self.open.ticks >= target / 2 {
                out.extend(self.close(wall_start_ms));
            }
        }
        if self.open.start_ticks.is_none() {
            self.open.start_ticks = Some(frag.base_media_decode_time);
        }
        let from = self.open.data.len();
        let part = self.open.part.get_or_insert(OpenPart {
            from,
            ticks: 0,
            independent: frag.starts_with_sync,
        });
        part.ticks += frag.duration;
        let part_full = part.ticks + frag.duration > limit;
        self.open.ticks += frag.duration;
        self.open.data.extend_from_slice(data);
        if part_full {
            out.parts.extend(self.finish_part());
            if self.open.ticks + limit / 4 >= target {
                out.extend(self.close(wall_start_ms));
            }
        }
        out
    }

    /// The file name of the part being written, once its first chunk is in.
    pub fn part_in_progress(&self) -> Option<String> {
        self.open.part.as_ref().map(|_| self.next_part_name())
    }

    /// The name the next part will have (`EXT-X-PRELOAD-HINT`).
    pub fn next_part_name(&self) -> String {
        format!("part-{}-{}.m4s", self.next_number, self.open.parts.len())
    }

    /// The bytes of the part being written, from `from` on.
    pub(super) fn part_bytes(&self, from: usize) -> Option<&[u8]> {
        let p = self.open.part.as_ref()?;
        self.open.data.get(p.from + from..).or(Some(&[]))
    }

    /// Ends the part being written: it is listed from now on.
    fn finish_part(&mut self) -> Option<(String, Bytes)> {
        let p = self.open.part.take()?;
        let name = self.next_part_name();
        let data = Bytes::copy_from_slice(&self.open.data[p.from..]);
        self.open.parts.push(PartMeta {
            duration_s: p.ticks as f64 / f64::from(self.timescale()),
            independent: p.independent,
        });
        self.remember(name.clone(), data.clone());
        Some((name, data))
    }

    /// Closes the open segment, if any (also at the end of an epoch), with the part being
    /// written.
    pub fn close(&mut self, wall_start_ms: i64) -> Added {
        let mut out = Added {
            parts: self.finish_part().into_iter().collect(),
            segments: Vec::new(),
        };
        if self.open.parts.is_empty() {
            return out;
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
        out.segments.push(Completed {
            name,
            data,
            segment,
        });
        out
    }

    /// Completes the segment a lost encoder left open, from the chunks of its stored parts
    /// (in order) and its epoch's init: the same cutting as when they were written, so the
    /// parts come out as they were listed and the segment is what they add up to. The
    /// returned segments are to be stored; the parts already are.
    #[allow(clippy::too_many_arguments)]
    pub fn complete_open(
        &mut self,
        epoch: u32,
        track: TrackInfo,
        init: Bytes,
        chunks: &[(Fragment, Bytes)],
        segment_s: f64,
        part_target_s: f64,
        wall_start_ms: i64,
    ) -> Vec<Completed> {
        self.begin_epoch(epoch);
        self.set_init(epoch, track, init);
        let mut done = Vec::new();
        for (frag, data) in chunks {
            done.extend(
                self.add_chunk(frag, data, segment_s, part_target_s, wall_start_ms)
                    .segments,
            );
        }
        done.extend(self.close(wall_start_ms).segments);
        done
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

    pub(crate) fn rung_360p() -> Rung {
        Rung {
            name: "360p".into(),
            width: 640,
            height: 360,
            video_bitrate: 800_000,
            max_bitrate: 1_200_000,
            buffer_size: 1_600_000,
        }
    }

    pub(crate) fn video() -> RenditionState {
        let mut r = RenditionState::new("360p", Some(rung_360p()));
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

    /// PART-TARGET for half-second parts.
    const TARGET: f64 = 0.525;

    /// Adds a fragment that is a whole part; returns the part's name and closed segments.
    pub(crate) fn whole_part(
        r: &mut RenditionState,
        f: Fragment,
        data: &[u8],
        wall: i64,
    ) -> (String, Vec<Completed>) {
        let mut out = r.add_chunk(&f, data, 2.0, TARGET, wall);
        let (name, _) = out.parts.pop().expect("a whole part is finished at once");
        (name, out.segments)
    }

    #[test]
    fn four_half_second_parts_make_a_two_second_segment_at_once() {
        let mut r = video();
        for i in 0..3 {
            let (name, done) = whole_part(&mut r, frag(i * 500, 500, i == 0), b"x", 0);
            assert_eq!(name, format!("part-1-{i}.m4s"));
            assert!(done.is_empty());
        }
        let (_, done) = whole_part(&mut r, frag(1500, 500, false), b"y", 0);
        assert_eq!(
            done.len(),
            1,
            "closed with its last part, not one part later"
        );
        assert_eq!(done[0].segment.number, 1);
        assert_eq!(done[0].segment.duration_s, 2.0);
        assert_eq!(&done[0].data[..], b"xxxy");
        let (name, _) = whole_part(&mut r, frag(2000, 500, true), b"", 0);
        assert_eq!(name, "part-2-0.m4s");
    }

    #[test]
    fn an_early_keyframe_starts_a_new_segment() {
        let mut r = video();
        whole_part(&mut r, frag(0, 500, true), b"", 0);
        whole_part(&mut r, frag(500, 500, false), b"", 0);
        let (name, done) = whole_part(&mut r, frag(1000, 500, true), b"", 0);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].segment.duration_s, 1.0);
        assert_eq!(name, "part-2-0.m4s");
    }

    #[test]
    fn chunks_fill_a_part_that_can_be_read_while_it_is_written() {
        let mut r = video();
        assert_eq!(r.part_in_progress(), None);
        assert_eq!(r.next_part_name(), "part-1-0.m4s");
        for i in 0..4u64 {
            let out = r.add_chunk(&frag(i * 100, 100, i == 0), b"ab", 2.0, TARGET, 0);
            assert!(out.is_empty(), "chunk {i} finished {out:?}");
            assert_eq!(r.part_in_progress().as_deref(), Some("part-1-0.m4s"));
            assert_eq!(r.part_bytes(0).unwrap().len(), 2 * (i as usize + 1));
        }
        assert_eq!(r.part_bytes(5), Some(&b"bab"[..]));
        assert_eq!(r.part_bytes(100), Some(&b""[..]), "past the end is empty");
        // The fifth makes 500 ms; a sixth would pass the 525 ms target, so the part ends now.
        let out = r.add_chunk(&frag(400, 100, false), b"cd", 2.0, TARGET, 0);
        assert_eq!(out.parts.len(), 1);
        assert_eq!(out.parts[0].0, "part-1-0.m4s");
        assert_eq!(&out.parts[0].1[..], b"ababababcd");
        assert_eq!(r.open.parts[0].duration_s, 0.5);
        assert!(r.open.parts[0].independent);
        assert_eq!(r.part_in_progress(), None);
        assert_eq!(r.next_part_name(), "part-1-1.m4s");
        assert_eq!(r.part_bytes(0), None);
        // A segment is still the concatenation of its parts' chunks.
        for i in 5..20u64 {
            let out = r.add_chunk(&frag(i * 100, 100, false), b"e", 2.0, TARGET, 0);
            assert_eq!(out.segments.len(), usize::from(i == 19), "chunk {i}");
            if i == 19 {
                assert_eq!(out.segments[0].segment.parts.len(), 4);
                assert_eq!(out.segments[0].data.len(), 10 + 15);
            }
        }
    }

    #[test]
    fn audio_chunks_of_six_aac_frames_make_parts_within_the_target() {
        let mut r = RenditionState::new("audio", None);
        let mut track = video().track.unwrap();
        track.kind = TrackKind::Audio;
        track.timescale = 48_000;
        r.set_init(0, track, Bytes::new());
        let chunk = 6 * 1024; // 128 ms
        let mut parts = Vec::new();
        for i in 0..16u64 {
            let out = r.add_chunk(&frag(i * chunk, chunk, true), b"a", 2.0, TARGET, 0);
            parts.extend(out.parts.into_iter().map(|(n, _)| n));
        }
        assert_eq!(parts.len(), 4, "{parts:?}");
        let listed: Vec<f64> = r
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .chain(r.open.parts.iter())
            .map(|p| p.duration_s)
            .collect();
        assert!(
            listed.iter().all(|d| (*d - 0.512).abs() < 1e-9),
            "every part is 4 chunks, at most the target: {listed:?}"
        );
    }

    #[test]
    fn a_keyframe_ends_the_part_in_progress_and_starts_an_independent_one() {
        let mut r = video();
        r.add_chunk(&frag(0, 100, true), b"k", 2.0, TARGET, 0);
        r.add_chunk(&frag(100, 100, false), b"p", 2.0, TARGET, 0);
        let out = r.add_chunk(&frag(200, 100, true), b"K", 2.0, TARGET, 0);
        assert_eq!(out.parts.len(), 1, "the short part ends at the keyframe");
        assert_eq!(&out.parts[0].1[..], b"kp");
        assert!(out.segments.is_empty(), "less than half a segment is open");
        assert_eq!(r.part_in_progress().as_deref(), Some("part-1-1.m4s"));
        // An epoch's end finishes the part in progress and its segment.
        let out = r.close(0);
        assert_eq!(out.parts.len(), 1);
        assert_eq!(out.parts[0].0, "part-1-1.m4s");
        assert_eq!(out.segments.len(), 1);
        assert_eq!(&out.segments[0].data[..], b"kpK");
        let parts = &out.segments[0].segment.parts;
        assert_eq!(parts.len(), 2);
        assert!(parts[1].independent);
        assert!((out.segments[0].segment.duration_s - 0.3).abs() < 1e-9);
        assert!(r.close(0).is_empty(), "nothing is open any more");
    }

    #[test]
    fn old_parts_leave_memory() {
        let mut r = video();
        for i in 0..40u64 {
            whole_part(&mut r, frag(i * 500, 500, i % 4 == 0), b"p", 0);
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
