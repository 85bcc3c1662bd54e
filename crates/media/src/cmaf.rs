//! Deciding where segments end, given the fragments [`crate::mp4`] found.
//!
//! One rule serves VOD and live: a new segment starts at a fragment that begins with a sync
//! sample, once the open segment has reached the target duration. Video therefore cuts at the
//! first keyframe at or after the target; audio (every sample is sync) cuts at the first
//! fragment boundary at or after it. For live, fragments are short (e.g. 0.5 s) and become the
//! LL-HLS parts of ~2 s segments, so [`SegmentBuilder`] applies the rule incrementally.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::mp4::Fragment;

/// One planned segment: consecutive fragments played back as a single HLS/DASH segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentPlan {
    /// Segment number (`$Number$` in DASH; media sequence in HLS).
    pub number: u64,
    /// Indices of the fragments in the slice (or push order) the plan was made from.
    pub fragments: Range<usize>,
    /// Decode time of the first fragment, in timescale units.
    pub start: u64,
    /// Sum of the fragments' durations, in timescale units.
    pub duration: u64,
}

/// Number given to the first segment by [`plan_segments`]; matches DASH's default `startNumber`.
pub const FIRST_SEGMENT_NUMBER: u64 = 1;

/// Groups consecutive fragments into segments of about `target` timescale units (see the module
/// docs for the rule). The last segment takes whatever remains. Numbers start at
/// [`FIRST_SEGMENT_NUMBER`].
pub fn plan_segments(frags: &[Fragment], target: u64) -> Vec<SegmentPlan> {
    let mut builder = SegmentBuilder::new(target, FIRST_SEGMENT_NUMBER);
    let mut plans: Vec<SegmentPlan> = frags.iter().filter_map(|f| builder.push(f)).collect();
    plans.extend(builder.finish());
    plans
}

/// When a sync fragment starts a new segment.
#[derive(Clone, Debug)]
enum CutRule {
    /// Once the open segment has reached this duration.
    Target(u64),
    /// At these times (ascending), each taken by the first fragment whose middle lies past it.
    At(std::collections::VecDeque<u64>),
}

/// Incremental form of [`plan_segments`]: push fragments as they complete and receive each
/// segment when the next one starts.
#[derive(Clone, Debug)]
pub struct SegmentBuilder {
    rule: CutRule,
    next_number: u64,
    /// Number of fragments pushed so far (the index the next one gets).
    pushed: usize,
    open: Option<SegmentPlan>,
}

impl SegmentBuilder {
    /// `target` is in timescale units; `first_number` numbers the first segment.
    pub fn new(target: u64, first_number: u64) -> Self {
        Self {
            rule: CutRule::Target(target),
            next_number: first_number,
            pushed: 0,
            open: None,
        }
    }

    /// Segments that start where another rendition's do: at each of `cuts` (decode times in
    /// this track's timescale, ascending; the start of the first segment is implied). Audio
    /// uses it to follow the video's segments, so every rendition has the same number of
    /// segments covering the same time. A cut lands on the fragment boundary nearest to it:
    /// the first fragment whose middle lies past the cut opens the new segment.
    pub fn aligned(cuts: &[u64], first_number: u64) -> Self {
        let mut cuts: Vec<u64> = cuts.to_vec();
        cuts.sort_unstable();
        cuts.dedup();
        Self {
            rule: CutRule::At(cuts.into()),
            next_number: first_number,
            pushed: 0,
            open: None,
        }
    }

    /// Whether `frag` opens a new segment after `open` (see [`CutRule`]); consumes the cuts
    /// it passes.
    fn cuts_before(&mut self, frag: &Fragment, open: &SegmentPlan) -> bool {
        if !frag.starts_with_sync {
            return false;
        }
        match &mut self.rule {
            CutRule::Target(target) => open.duration >= *target,
            CutRule::At(cuts) => {
                let middle = frag
                    .base_media_decode_time
                    .saturating_add(frag.duration / 2);
                let mut passed = false;
                while cuts.front().is_some_and(|&c| c < middle) {
                    cuts.pop_front();
                    passed = true;
                }
                passed
            }
        }
    }

    /// Adds the next fragment. Returns the previous segment if this fragment starts a new one.
    pub fn push(&mut self, frag: &Fragment) -> Option<SegmentPlan> {
        let index = self.pushed;
        self.pushed += 1;
        let closed = match self.open.take() {
            Some(mut open) if !self.cuts_before(frag, &open) => {
                open.fragments.end = index + 1;
                open.duration = open.duration.saturating_add(frag.duration);
                self.open = Some(open);
                return None;
            }
            Some(open) => Some(open),
            None => {
                // Cuts at or before the first fragment's middle are the start itself.
                if let CutRule::At(cuts) = &mut self.rule {
                    let middle = frag
                        .base_media_decode_time
                        .saturating_add(frag.duration / 2);
                    cuts.retain(|&c| c >= middle);
                }
                None
            }
        };
        self.open = Some(SegmentPlan {
            number: self.next_number,
            fragments: index..index + 1,
            start: frag.base_media_decode_time,
            duration: frag.duration,
        });
        self.next_number += 1;
        closed
    }

    /// The segment being assembled, if any (for LL-HLS: the segment the latest parts belong to).
    pub fn open_segment(&self) -> Option<&SegmentPlan> {
        self.open.as_ref()
    }

    /// Ends the stream, returning the last (possibly short) segment.
    pub fn finish(self) -> Option<SegmentPlan> {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contiguous fragments from `(duration, sync)` pairs starting at decode time `t0`.
    fn frags(t0: u64, spec: &[(u64, bool)]) -> Vec<Fragment> {
        let mut t = t0;
        spec.iter()
            .enumerate()
            .map(|(i, &(duration, sync))| {
                let f = Fragment {
                    range: i * 100..(i + 1) * 100,
                    sequence_number: i as u32 + 1,
                    base_media_decode_time: t,
                    duration,
                    sample_count: 1,
                    starts_with_sync: sync,
                    earliest_presentation_time: t as i64,
                };
                t += duration;
                f
            })
            .collect()
    }

    fn plan(number: u64, fragments: Range<usize>, start: u64, duration: u64) -> SegmentPlan {
        SegmentPlan {
            number,
            fragments,
            start,
            duration,
        }
    }

    #[test]
    fn empty_input_has_no_segments() {
        assert_eq!(plan_segments(&[], 4), vec![]);
        assert_eq!(SegmentBuilder::new(4, 0).finish(), None);
    }

    #[test]
    fn video_gops_equal_to_target() {
        // 2 s GOPs at 90 kHz, target 2 s: one fragment per segment.
        let f = frags(0, &[(180_000, true); 4]);
        assert_eq!(
            plan_segments(&f, 180_000),
            vec![
                plan(1, 0..1, 0, 180_000),
                plan(2, 1..2, 180_000, 180_000),
                plan(3, 2..3, 360_000, 180_000),
                plan(4, 3..4, 540_000, 180_000),
            ]
        );
    }

    #[test]
    fn video_short_gops_merge_until_target() {
        // 2 s keyframe fragments, target 4 s: pairs, odd tail alone.
        let f = frags(0, &[(2000, true); 5]);
        assert_eq!(
            plan_segments(&f, 4000),
            vec![
                plan(1, 0..2, 0, 4000),
                plan(2, 2..4, 4000, 4000),
                plan(3, 4..5, 8000, 2000)
            ]
        );
    }

    #[test]
    fn video_irregular_keyframes_cut_at_first_keyframe_after_target() {
        // Scene-cut keyframes: 1.5, 3.0, 1.0, 2.5, 0.5 s (ms timescale), target 4 s.
        let f = frags(
            0,
            &[
                (1500, true),
                (3000, true),
                (1000, true),
                (2500, true),
                (500, true),
            ],
        );
        assert_eq!(
            plan_segments(&f, 4000),
            vec![plan(1, 0..2, 0, 4500), plan(2, 2..5, 4500, 4000)]
        );
    }

    #[test]
    fn non_sync_fragments_never_start_a_segment() {
        // Live-style 0.5 s fragments, keyframe every 2 s, target 2 s: each segment has 4 parts.
        let mut spec = Vec::new();
        for i in 0..10 {
            spec.push((500, i % 4 == 0));
        }
        let f = frags(1000, &spec);
        assert_eq!(
            plan_segments(&f, 2000),
            vec![
                plan(1, 0..4, 1000, 2000),
                plan(2, 4..8, 3000, 2000),
                plan(3, 8..10, 5000, 1000)
            ]
        );
        // A GOP longer than the target makes a longer segment rather than a cut mid-GOP.
        let f = frags(
            0,
            &[
                (500, true),
                (500, false),
                (500, false),
                (500, false),
                (500, false),
                (500, true),
            ],
        );
        assert_eq!(
            plan_segments(&f, 2000),
            vec![plan(1, 0..5, 0, 2500), plan(2, 5..6, 2500, 500)]
        );
    }

    #[test]
    fn first_fragment_without_keyframe_still_opens_segment_one() {
        let f = frags(0, &[(1000, false), (1000, true), (1000, true)]);
        assert_eq!(
            plan_segments(&f, 2000),
            vec![plan(1, 0..2, 0, 2000), plan(2, 2..3, 2000, 1000)]
        );
    }

    #[test]
    fn audio_fragments_cut_at_first_boundary_at_or_after_target() {
        // AAC at 48 kHz, one 1024-sample frame per fragment, target 4 s = 192000 ticks:
        // 188 frames = 192512 ticks (first count reaching the target).
        let f = frags(0, &vec![(1024, true); 400]);
        let p = plan_segments(&f, 192_000);
        assert_eq!(
            p,
            vec![
                plan(1, 0..188, 0, 192_512),
                plan(2, 188..376, 192_512, 192_512),
                plan(3, 376..400, 385_024, 24 * 1024)
            ]
        );
    }

    #[test]
    fn target_zero_cuts_at_every_sync_fragment() {
        let f = frags(0, &[(10, true), (10, false), (10, true)]);
        assert_eq!(
            plan_segments(&f, 0),
            vec![plan(1, 0..2, 0, 20), plan(2, 2..3, 20, 10)]
        );
    }

    #[test]
    fn aligned_segments_follow_another_renditions_cuts() {
        // AAC fragments of 10 frames (10240 ticks at 48 kHz, 0.213 s) following video segments
        // cut at 1 s and 2 s, 2.05 s in all: cuts land on the nearest fragment boundary, and a
        // short tail joins the last segment instead of making a third.
        let f = frags(0, &[(10_240, true); 10]);
        let mut b = SegmentBuilder::aligned(&[96_000, 48_000], 1);
        let mut out: Vec<_> = f.iter().filter_map(|f| b.push(f)).collect();
        out.extend(b.finish());
        // 48000 lies in fragment 4 (40960..51200), past its middle 46080: fragment 5 opens.
        // 96000 lies in fragment 9 (92160..102400), before its middle 97280: fragment 9 opens.
        assert_eq!(
            out,
            vec![
                plan(1, 0..5, 0, 51_200),
                plan(2, 5..9, 51_200, 40_960),
                plan(3, 9..10, 92_160, 10_240)
            ]
        );
        // No cuts: one segment. Cuts past the end: still one.
        let mut b = SegmentBuilder::aligned(&[], 1);
        assert!(f.iter().all(|f| b.push(f).is_none()));
        assert_eq!(b.finish(), Some(plan(1, 0..10, 0, 102_400)));
        let mut b = SegmentBuilder::aligned(&[0, 1_000_000], 7);
        assert!(f.iter().all(|f| b.push(f).is_none()));
        assert_eq!(
            b.finish().map(|p| (p.number, p.fragments)),
            Some((7, 0..10))
        );
        // Two cuts inside one fragment make one boundary, never an empty segment.
        let mut b = SegmentBuilder::aligned(&[20_000, 21_000], 1);
        let closed: Vec<_> = f.iter().filter_map(|f| b.push(f)).collect();
        assert_eq!(closed, vec![plan(1, 0..2, 0, 20_480)]);
    }

    #[test]
    fn builder_reports_segments_incrementally() {
        let f = frags(
            0,
            &[
                (500, true),
                (500, false),
                (500, false),
                (500, false),
                (500, true),
                (500, false),
            ],
        );
        let mut b = SegmentBuilder::new(2000, 10);
        let out: Vec<_> = f.iter().map(|f| b.push(f)).collect();
        assert_eq!(
            out,
            vec![None, None, None, None, Some(plan(10, 0..4, 0, 2000)), None]
        );
        assert_eq!(b.open_segment(), Some(&plan(11, 4..6, 2000, 1000)));
        assert_eq!(b.finish(), Some(plan(11, 4..6, 2000, 1000)));
    }
}
