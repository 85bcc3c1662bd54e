//! Where a long video is cut so that many workers can encode it at once and the stitched
//! renditions are exactly what one whole-file encode would have cut.
//!
//! The whole-file encode forces a closed-GOP keyframe at the first frame at or after every
//! multiple of the segment duration, and the packager starts a segment at each. A chunk is a
//! whole number of those segments: it starts on a segment's first frame, so its encoder's first
//! (always key) frame is exactly a keyframe the whole-file encode would have had, and its
//! segments are numbered on from the chunk before. Everything here is in frames of the output
//! frame rate (after the frame-rate policy) and exact rational arithmetic: no float decides
//! which frame a boundary falls on.

use serde::{Deserialize, Serialize};

/// An exact output frame rate, `num/den` frames per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameRate {
    pub num: u32,
    pub den: u32,
}

impl FrameRate {
    pub fn new(num: u32, den: u32) -> Self {
        Self {
            num: num.max(1),
            den: den.max(1),
        }
    }

    pub fn fps(self) -> f64 {
        f64::from(self.num) / f64::from(self.den)
    }

    /// Start time of frame `n`, seconds.
    pub fn time_of(self, frame: u64) -> f64 {
        frame as f64 * f64::from(self.den) / f64::from(self.num)
    }

    /// The first frame at or after `ms` milliseconds: `ceil(ms * num / (1000 * den))`.
    pub fn first_frame_at_or_after_ms(self, ms: u64) -> u64 {
        let n = u128::from(ms) * u128::from(self.num);
        let d = 1000 * u128::from(self.den);
        n.div_ceil(d) as u64
    }

    /// Frames in `seconds` of video (rounded to the nearest frame).
    pub fn frames_in(self, seconds: f64) -> u64 {
        (seconds.max(0.0) * self.fps()).round() as u64
    }
}

/// Segment duration in whole milliseconds (configured in seconds, e.g. 2.0 or 1.5).
pub fn segment_ms(segment_s: f64) -> u64 {
    ((segment_s * 1000.0).round() as u64).max(1)
}

/// First frame of the zero-based segment `index`.
pub fn segment_start_frame(index: u64, segment_s: f64, rate: FrameRate) -> u64 {
    rate.first_frame_at_or_after_ms(index * segment_ms(segment_s))
}

/// One chunk: frames `[first_frame, end_frame)` of the output, the segments numbered from
/// `first_segment`. The last chunk of a video has `end_frame: None` (to the end of the source):
/// how many frames the frame-rate filter makes of the tail is only known once it has run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    pub index: u32,
    pub first_frame: u64,
    pub end_frame: Option<u64>,
    /// Number of the chunk's first segment (segments are numbered from
    /// [`crate::cmaf::FIRST_SEGMENT_NUMBER`] across the whole video).
    pub first_segment: u64,
    /// Keyframes the encoder must force after its first frame, as frame offsets from
    /// `first_frame`: the starts of the chunk's other segments.
    pub keyframes: Vec<u64>,
}

impl Chunk {
    pub fn frame_count(&self) -> Option<u64> {
        self.end_frame.map(|e| e - self.first_frame)
    }

    /// Segments this chunk makes (the last chunk may end with a shorter one).
    pub fn segments(&self) -> u64 {
        self.keyframes.len() as u64 + 1
    }
}

/// Segments per chunk for a configured chunk length: `chunk_s` rounded to whole segments, at
/// least one.
pub fn segments_per_chunk(chunk_s: f64, segment_s: f64) -> u64 {
    ((chunk_s / segment_s).round() as u64).max(1)
}

/// Splits `total_frames` (the expected output frame count) into chunks of
/// [`segments_per_chunk`] segments. A video no longer than one chunk is one chunk (encode it
/// whole). `first_segment_number` is what the first segment is called.
pub fn plan_chunks(
    total_frames: u64,
    rate: FrameRate,
    segment_s: f64,
    chunk_s: f64,
    first_segment_number: u64,
) -> Vec<Chunk> {
    let per = segments_per_chunk(chunk_s, segment_s);
    let start = |seg: u64| segment_start_frame(seg, segment_s, rate);
    // Segments whose first frame is a frame of the video.
    let mut segments = 1;
    while start(segments) < total_frames {
        segments += 1;
    }
    let count = segments.div_ceil(per);
    (0..count)
        .map(|k| {
            let first_seg = k * per;
            let last_seg = ((k + 1) * per).min(segments);
            let first_frame = start(first_seg);
            Chunk {
                index: k as u32,
                first_frame,
                end_frame: (k + 1 < count).then(|| start(last_seg)),
                first_segment: first_segment_number + first_seg,
                keyframes: (first_seg + 1..last_seg)
                    .map(|s| start(s) - first_frame)
                    .collect(),
            }
        })
        .collect()
}

/// What a stitched rendition must look like, checked before a chunk is accepted: its
/// segments carry on exactly where the chunk before ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSegment {
    pub number: u64,
    /// Decode time of the first sample (timescale units), after the chunk's shift.
    pub start: u64,
    pub duration: u64,
    pub samples: u64,
}

/// Checks that one rendition's chunk output is the stretch `chunk` stands for: frame count
/// (for a last chunk, within `tail_tolerance` frames of `expected_total`, an estimate from the
/// probed duration), segment numbers and boundaries, the first decode time. `frame_duration` is
/// one frame in the track's timescale.
pub fn check_chunk_output(
    chunk: &Chunk,
    segments: &[ChunkSegment],
    frame_duration: u64,
    expected_total: u64,
    tail_tolerance: u64,
) -> Result<(), String> {
    let frames: u64 = segments.iter().map(|s| s.samples).sum();
    match chunk.frame_count() {
        Some(n) if frames != n => {
            return Err(format!(
                "chunk {} has {frames} frames, expected {n} (frames {}..{})",
                chunk.index,
                chunk.first_frame,
                chunk.first_frame + n
            ))
        }
        None => {
            let expected = expected_total.saturating_sub(chunk.first_frame);
            if frames == 0 || frames.abs_diff(expected) > tail_tolerance {
                return Err(format!(
                    "last chunk {} has {frames} frames, expected {expected} (to the end of the source)",
                    chunk.index
                ));
            }
        }
        _ => {}
    }
    if segments.len() as u64 != chunk.segments() {
        return Err(format!(
            "chunk {} made {} segments, expected {}",
            chunk.index,
            segments.len(),
            chunk.segments()
        ));
    }
    let mut frame = chunk.first_frame;
    let starts = std::iter::once(0).chain(chunk.keyframes.iter().copied());
    for ((i, s), offset) in segments.iter().enumerate().zip(starts) {
        let number = chunk.first_segment + i as u64;
        if s.number != number {
            return Err(format!(
                "chunk {}: segment {} is numbered {}",
                chunk.index, number, s.number
            ));
        }
        if chunk.first_frame + offset != frame {
            return Err(format!(
                "chunk {}: segment {number} starts at frame {frame}, expected {}",
                chunk.index,
                chunk.first_frame + offset
            ));
        }
        if s.start != frame * frame_duration {
            return Err(format!(
                "chunk {}: segment {number} starts at decode time {}, expected {} (frame {frame})",
                chunk.index,
                s.start,
                frame * frame_duration
            ));
        }
        if s.duration != s.samples * frame_duration {
            return Err(format!(
                "chunk {}: segment {number} lasts {} for {} frames of {frame_duration}",
                chunk.index, s.duration, s.samples
            ));
        }
        frame += s.samples;
    }
    Ok(())
}

/// Checks that a stitched rendition's segments are numbered on from `first_number` and each
/// starts where the one before ends: no gap, no overlap, no repeated `tfdt`.
pub fn check_continuous(segments: &[ChunkSegment], first_number: u64) -> Result<(), String> {
    let mut expect_start = None;
    for (i, s) in segments.iter().enumerate() {
        let number = first_number + i as u64;
        if s.number != number {
            return Err(format!("segment {number} is numbered {}", s.number));
        }
        if let Some(t) = expect_start {
            if s.start != t {
                return Err(format!(
                    "segment {number} starts at decode time {}, the one before ends at {t}",
                    s.start
                ));
            }
        }
        expect_start = Some(s.start + s.duration);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const R30: FrameRate = FrameRate { num: 30, den: 1 };
    const NTSC: FrameRate = FrameRate {
        num: 30000,
        den: 1001,
    };

    #[test]
    fn boundaries_are_the_first_frame_at_or_after_each_segment_time() {
        assert_eq!(segment_start_frame(0, 2.0, R30), 0);
        assert_eq!(segment_start_frame(1, 2.0, R30), 60);
        // 29.97: 2 s is frame 59.94 -> 60; 4 s is 119.88 -> 120; 100 s is 2997.003 -> 2998.
        assert_eq!(segment_start_frame(1, 2.0, NTSC), 60);
        assert_eq!(segment_start_frame(2, 2.0, NTSC), 120);
        assert_eq!(segment_start_frame(50, 2.0, NTSC), 2998);
        // 1.5 s segments at 25 fps: 37.5 -> 38, 75.
        let r25 = FrameRate::new(25, 1);
        assert_eq!(segment_start_frame(1, 1.5, r25), 38);
        assert_eq!(segment_start_frame(2, 1.5, r25), 75);
    }

    #[test]
    fn three_minutes_in_thirty_second_chunks() {
        let chunks = plan_chunks(180 * 30, R30, 2.0, 30.0, 1);
        assert_eq!(chunks.len(), 6);
        assert_eq!(chunks[0].first_frame, 0);
        assert_eq!(chunks[0].end_frame, Some(900));
        assert_eq!(chunks[0].first_segment, 1);
        assert_eq!(
            chunks[0].keyframes,
            (1..15).map(|i| i * 60).collect::<Vec<_>>()
        );
        assert_eq!(chunks[1].first_frame, 900);
        assert_eq!(chunks[1].first_segment, 16);
        assert_eq!(chunks[5].first_frame, 4500);
        assert_eq!(chunks[5].end_frame, None);
        assert_eq!(chunks[5].first_segment, 76);
        assert_eq!(chunks[5].segments(), 15);
    }

    #[test]
    fn a_short_video_is_one_chunk_and_a_tail_is_its_own() {
        let one = plan_chunks(59 * 30, R30, 2.0, 60.0, 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].end_frame, None);
        assert_eq!(one[0].segments(), 30);
        // 61 s: 31 segments, the last one alone.
        let two = plan_chunks(61 * 30, R30, 2.0, 60.0, 1);
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].first_frame, 1800);
        assert_eq!(two[1].first_segment, 31);
        assert!(two[1].keyframes.is_empty());
    }

    #[test]
    fn chunk_length_is_rounded_to_whole_segments() {
        assert_eq!(segments_per_chunk(60.0, 2.0), 30);
        assert_eq!(segments_per_chunk(61.0, 2.0), 31);
        assert_eq!(segments_per_chunk(0.5, 2.0), 1);
        let c = plan_chunks(600, R30, 2.0, 5.0, 1); // 5 s -> 3 segments (rounded from 2.5)
        assert_eq!(c[0].end_frame, Some(180));
    }

    fn segments_for(chunk: &Chunk, total: u64, d: u64) -> Vec<ChunkSegment> {
        let end = chunk.end_frame.unwrap_or(total);
        let mut starts: Vec<u64> = std::iter::once(0)
            .chain(chunk.keyframes.iter().copied())
            .map(|o| chunk.first_frame + o)
            .collect();
        starts.push(end);
        starts
            .windows(2)
            .enumerate()
            .map(|(i, w)| ChunkSegment {
                number: chunk.first_segment + i as u64,
                start: w[0] * d,
                duration: (w[1] - w[0]) * d,
                samples: w[1] - w[0],
            })
            .collect()
    }

    #[test]
    fn a_chunk_that_is_what_it_stands_for_passes() {
        for c in plan_chunks(5400, R30, 2.0, 30.0, 1) {
            check_chunk_output(&c, &segments_for(&c, 5400, 512), 512, 5400, 1).unwrap();
        }
    }

    #[test]
    fn a_missing_frame_a_wrong_start_or_number_is_named() {
        let chunks = plan_chunks(5400, R30, 2.0, 30.0, 1);
        let c = &chunks[2];
        let mut short = segments_for(c, 5400, 512);
        short.last_mut().unwrap().samples -= 1;
        short.last_mut().unwrap().duration -= 512;
        let e = check_chunk_output(c, &short, 512, 5400, 1).unwrap_err();
        assert!(e.contains("899 frames, expected 900"), "{e}");

        let mut late = segments_for(c, 5400, 512);
        for s in &mut late {
            s.start += 512;
        }
        let e = check_chunk_output(c, &late, 512, 5400, 1).unwrap_err();
        assert!(e.contains("decode time"), "{e}");

        let mut renumbered = segments_for(c, 5400, 512);
        renumbered[0].number = 1;
        let e = check_chunk_output(c, &renumbered, 512, 5400, 1).unwrap_err();
        assert!(e.contains("numbered 1"), "{e}");

        let last = chunks.last().unwrap();
        let mut tail = segments_for(last, 5400 - 3, 512);
        let e = check_chunk_output(last, &tail, 512, 5400, 1).unwrap_err();
        assert!(e.contains("last chunk"), "{e}");
        check_chunk_output(last, &tail, 512, 5400, 30).unwrap();
        tail = segments_for(last, 5401, 512);
        check_chunk_output(last, &tail, 512, 5400, 1).unwrap();
    }

    #[test]
    fn stitched_segments_must_join_up() {
        let seg = |number, start| ChunkSegment {
            number,
            start,
            duration: 100,
            samples: 1,
        };
        check_continuous(&[seg(1, 0), seg(2, 100), seg(3, 200)], 1).unwrap();
        let e = check_continuous(&[seg(1, 0), seg(2, 100), seg(3, 100)], 1).unwrap_err();
        assert!(e.contains("segment 3 starts at decode time 100"), "{e}");
        let e = check_continuous(&[seg(1, 0), seg(3, 100)], 1).unwrap_err();
        assert!(e.contains("segment 2 is numbered 3"), "{e}");
    }

    proptest! {
        /// Chunks cover every frame once, in order, each starting on a segment boundary, and
        /// together list exactly the whole-file encode's segment boundaries.
        #[test]
        fn chunks_partition_the_video_on_segment_boundaries(
            total in 1u64..200_000,
            num in prop::sample::select(vec![24000u32, 24, 25, 30000, 30, 50, 60000, 60]),
            seg_ms in prop::sample::select(vec![1000u64, 1500, 2000, 4000, 6000]),
            chunk_s in 1.0f64..200.0,
        ) {
            let den = if num % 1000 == 0 { 1001 } else { 1 };
            let rate = FrameRate::new(num, den);
            let seg = seg_ms as f64 / 1000.0;
            let chunks = plan_chunks(total, rate, seg, chunk_s, 1);
            let mut frame = 0;
            let mut boundaries = Vec::new();
            for (i, c) in chunks.iter().enumerate() {
                prop_assert_eq!(c.index as usize, i);
                prop_assert_eq!(c.first_frame, frame);
                boundaries.push(c.first_frame);
                boundaries.extend(c.keyframes.iter().map(|k| c.first_frame + k));
                match c.end_frame {
                    Some(e) => { prop_assert!(e > c.first_frame); frame = e; }
                    None => prop_assert_eq!(i + 1, chunks.len()),
                }
            }
            prop_assert!(frame < total);
            let whole: Vec<u64> = (0..)
                .map(|s| segment_start_frame(s, seg, rate))
                .take_while(|&f| f < total)
                .collect();
            prop_assert_eq!(boundaries, whole);
        }
    }
}
