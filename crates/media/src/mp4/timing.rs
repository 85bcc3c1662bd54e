//! Timing rules a fragment must follow for every HLS and DASH reader to agree on its
//! timestamps, beyond what the box syntax allows.
//!
//! Signed composition offsets (version 1 `trun`, written by ffmpeg's `+cmaf`) are valid ISO
//! BMFF, but ffmpeg's DASH reader reopens its MP4 demuxer for every segment and turns them
//! into non-negative ones by shifting the segment by its own most negative offset. Two
//! segments whose B-frame pyramids differ in depth (x264 chooses per GOP) are then shifted by
//! different amounts and decode timestamps run backwards ("non monotonically increasing dts").
//! The cure is the layout ffmpeg's own `-f dash` muxer writes: non-negative offsets in every
//! fragment and one edit list in the init segment moving the first frame to time zero.

use super::read::{top_level_moofs, BoxRef};
use crate::Result;

/// Checks that no sample of the fragment (`moof` and its neighbours, as
/// [`super::SplitEvent::Fragment`] gives it) has a negative composition offset. The error names
/// the `trun`, its byte offset within `fragment`, the sample and the offset.
pub fn check_dash_timing(fragment: &[u8]) -> Result<()> {
    for moof in top_level_moofs(fragment)? {
        for traf in moof.children() {
            let traf = traf?;
            if &traf.typ.0 != b"traf" {
                continue;
            }
            for trun in traf.children() {
                let trun = trun?;
                if &trun.typ.0 == b"trun" {
                    check_trun(&trun)?;
                }
            }
        }
    }
    Ok(())
}

fn check_trun(trun: &BoxRef<'_>) -> Result<()> {
    const DATA_OFFSET: u32 = 0x01;
    const FIRST_SAMPLE_FLAGS: u32 = 0x04;
    const FIELDS: [u32; 3] = [0x100, 0x200, 0x400];
    const CTO: u32 = 0x800;
    let mut r = trun.reader();
    let (version, flags) = r.full_header()?;
    // Version 0 offsets are unsigned: never negative.
    if version == 0 || flags & CTO == 0 {
        return Ok(());
    }
    let count = r.u32()?;
    if flags & DATA_OFFSET != 0 {
        r.skip(4)?;
    }
    if flags & FIRST_SAMPLE_FLAGS != 0 {
        r.skip(4)?;
    }
    let before = FIELDS.iter().filter(|&&f| flags & f != 0).count() * 4;
    for i in 0..count {
        r.skip(before)?;
        let cto = r.i32()?;
        if cto < 0 {
            return Err(trun.invalid(format!(
                "sample {i} has composition offset {cto}: signed offsets make ffmpeg's DASH \
                 reader shift each segment differently; encode with positive offsets and an \
                 edit list (no +cmaf)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::testutil::{video_samples, Frag, Rng};

    /// ffmpeg `+cmaf` for a GOP with a 2-deep B pyramid: first frame at offset 0, B-frames
    /// negative. This is what made ffmpeg's DASH reader emit dts 269 twice.
    #[test]
    fn signed_offsets_from_cmaf_are_refused_with_the_sample_named() {
        let mut f = Frag::new(
            3,
            240_240,
            video_samples(1001, &[0, 1001, -1001, 1001, -1001]),
        );
        f.trun_version = 1;
        let err = check_dash_timing(&f.bytes()).unwrap_err().to_string();
        assert!(err.contains("invalid trun box"), "{err}");
        assert!(
            err.contains("sample 2 has composition offset -1001"),
            "{err}"
        );
    }

    /// What ffmpeg's `-f dash` (and our encoder now) writes: the same GOP shifted by the
    /// pyramid delay, offsets all positive, version 0 (or version 1 with no negatives).
    #[test]
    fn positive_offsets_pass_in_either_trun_version() {
        for version in [0, 1] {
            let mut f = Frag::new(
                3,
                240_240,
                video_samples(1001, &[2002, 3003, 1001, 3003, 1001]),
            );
            f.trun_version = version;
            check_dash_timing(&f.bytes()).unwrap();
        }
        // Audio: no composition offsets at all.
        let mut f = Frag::new(1, 0, video_samples(1024, &[0; 4]));
        f.trun_version = 1;
        check_dash_timing(&f.bytes()).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = {
            let mut f = Frag::new(1, 0, video_samples(1001, &[0, -1001, 1001]));
            f.trun_version = 1;
            f.bytes()
        };
        let mut rng = Rng(0x5eed);
        for _ in 0..2000 {
            let mut b = good.clone();
            let cut = rng.below(b.len() + 1);
            b.truncate(cut);
            for _ in 0..rng.below(4) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] = rng.next() as u8;
                }
            }
            let _ = check_dash_timing(&b);
        }
    }
}
