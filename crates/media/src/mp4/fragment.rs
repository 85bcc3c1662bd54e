//! `moof` parsing: sequence number, decode time, duration, sample count, keyframe flag and
//! earliest presentation time of one movie fragment.

use super::init::Trex;
use super::read::BoxRef;
use super::Fragment;
use crate::{Error, Result};

/// `sample_is_non_sync_sample` in sample flags (ISO/IEC 14496-12 §8.8.3.1).
const NON_SYNC: u32 = 0x0001_0000;

// tfhd flags
const TFHD_BASE_DATA_OFFSET: u32 = 0x01;
const TFHD_SAMPLE_DESCRIPTION_INDEX: u32 = 0x02;
const TFHD_DEFAULT_DURATION: u32 = 0x08;
const TFHD_DEFAULT_SIZE: u32 = 0x10;
const TFHD_DEFAULT_FLAGS: u32 = 0x20;

// trun flags
const TRUN_DATA_OFFSET: u32 = 0x01;
const TRUN_FIRST_SAMPLE_FLAGS: u32 = 0x04;
const TRUN_DURATION: u32 = 0x100;
const TRUN_SIZE: u32 = 0x200;
const TRUN_FLAGS: u32 = 0x400;
const TRUN_CTO: u32 = 0x800;

/// Parses a single-track `moof`. The returned fragment's `range` is empty; the caller sets it
/// once the matching `mdat` is known.
pub(crate) fn parse_moof(moof: &BoxRef<'_>, track_id: u32, trex: Option<Trex>) -> Result<Fragment> {
    let mut mfhd = None;
    let mut trafs = Vec::new();
    for child in moof.children() {
        let child = child?;
        match &child.typ.0 {
            b"mfhd" => mfhd = Some(child),
            b"traf" => trafs.push(child),
            _ => {}
        }
    }
    let mfhd = mfhd.ok_or(Error::MissingBox {
        box_type: crate::FourCc(*b"mfhd"),
        parent: moof.typ,
        offset: moof.offset,
    })?;
    let mut r = mfhd.reader();
    r.full_header()?;
    let sequence_number = r.u32()?;

    let [traf] = trafs[..] else {
        return Err(moof.invalid(format!("expected one traf, found {}", trafs.len())));
    };

    let tfhd = traf.require(b"tfhd")?;
    let mut r = tfhd.reader();
    let (_, flags) = r.full_header()?;
    let tfhd_track = r.u32()?;
    if tfhd_track != track_id {
        return Err(tfhd.invalid(format!(
            "track_ID {tfhd_track} does not match the init segment's track {track_id}"
        )));
    }
    if flags & TFHD_BASE_DATA_OFFSET != 0 {
        r.skip(8)?;
    }
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX != 0 {
        r.skip(4)?;
    }
    let tfhd_duration = (flags & TFHD_DEFAULT_DURATION != 0)
        .then(|| r.u32())
        .transpose()?;
    if flags & TFHD_DEFAULT_SIZE != 0 {
        r.skip(4)?;
    }
    let tfhd_flags = (flags & TFHD_DEFAULT_FLAGS != 0)
        .then(|| r.u32())
        .transpose()?;
    let default_duration = tfhd_duration.or(trex.map(|t| t.default_sample_duration));
    let default_flags = tfhd_flags.or(trex.map(|t| t.default_sample_flags));

    let tfdt = traf.require(b"tfdt")?;
    let mut r = tfdt.reader();
    let (version, _) = r.full_header()?;
    let base_media_decode_time = r.u32_or_u64(version)?;

    // Timing is accumulated in i128 so garbage values cannot overflow.
    let mut decode: i128 = 0;
    let mut earliest: Option<i128> = None;
    let mut sample_count: u32 = 0;
    let mut first_flags: Option<u32> = None;
    for trun in traf.children() {
        let trun = trun?;
        if &trun.typ.0 != b"trun" {
            continue;
        }
        let mut r = trun.reader();
        let (version, flags) = r.full_header()?;
        let count = r.u32()?;
        if flags & TRUN_DATA_OFFSET != 0 {
            r.skip(4)?;
        }
        let first_sample_flags = (flags & TRUN_FIRST_SAMPLE_FLAGS != 0)
            .then(|| r.u32())
            .transpose()?;
        let record = [TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTO]
            .iter()
            .filter(|&&f| flags & f != 0)
            .count()
            * 4;
        // Check the whole sample table fits before looping, so a garbage count fails fast.
        let needed = u64::from(count) * record as u64;
        if needed > r.remaining() as u64 {
            return Err(Error::Truncated {
                box_type: trun.typ,
                offset: trun.offset,
                needed,
                available: r.remaining(),
            });
        }
        let missing_duration = || trun.invalid("no sample duration in trun, tfhd or trex");
        let new_total = sample_count
            .checked_add(count)
            .ok_or_else(|| trun.invalid("sample count overflows"))?;
        if record == 0 {
            // Every sample uses the defaults: no per-sample loop needed.
            if count > 0 {
                let d = default_duration.ok_or_else(missing_duration)?;
                earliest.get_or_insert(decode);
                decode += i128::from(d) * i128::from(count);
                if sample_count == 0 {
                    first_flags = first_sample_flags.or(default_flags);
                }
            }
        } else {
            for i in 0..count {
                let d = if flags & TRUN_DURATION != 0 {
                    r.u32()?
                } else {
                    default_duration.ok_or_else(missing_duration)?
                };
                if flags & TRUN_SIZE != 0 {
                    r.skip(4)?;
                }
                let sample_flags = (flags & TRUN_FLAGS != 0).then(|| r.u32()).transpose()?;
                let cto = if flags & TRUN_CTO == 0 {
                    0
                } else if version == 0 {
                    i128::from(r.u32()?)
                } else {
                    i128::from(r.i32()?)
                };
                if sample_count == 0 && i == 0 {
                    first_flags = first_sample_flags.or(sample_flags).or(default_flags);
                }
                let pts = decode + cto;
                earliest = Some(earliest.map_or(pts, |e| e.min(pts)));
                decode += i128::from(d);
            }
        }
        sample_count = new_total;
    }

    let duration = u64::try_from(decode).map_err(|_| traf.invalid("duration overflows"))?;
    let starts_with_sync = match (sample_count, first_flags) {
        (0, _) => false,
        (_, Some(f)) => f & NON_SYNC == 0,
        (_, None) => return Err(traf.invalid("no sample flags in trun, tfhd or trex")),
    };
    let earliest = i128::from(base_media_decode_time) + earliest.unwrap_or(0);
    let earliest_presentation_time =
        i64::try_from(earliest).map_err(|_| traf.invalid("presentation time overflows"))?;
    Ok(Fragment {
        range: 0..0,
        sequence_number,
        base_media_decode_time,
        duration,
        sample_count,
        starts_with_sync,
        earliest_presentation_time,
    })
}
