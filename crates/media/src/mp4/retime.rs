//! Moving a fragment in time: a chunk of a video, encoded on its own from time zero, becomes the
//! stretch of the whole rendition it stands for by adding the chunk's start to every `tfdt` and
//! the fragments before it to every `mfhd` sequence number. Nothing else in a fragment carries
//! an absolute time (`trun` offsets are relative to `moof` with `default-base-is-moof`), so the
//! patch is in place: no box grows, no offset moves.

use super::read::{top_level_moofs, BoxRef};
use crate::{Error, Result};

/// Adds `decode_offset` (timescale units) to the `tfdt` and `sequence_offset` to the `mfhd` of
/// every `moof` in `fragment` (the bytes of a [`super::SplitEvent::Fragment`]). A 32-bit
/// `tfdt` that would overflow, or a sequence number past `u32::MAX`, is an error naming the
/// box; the bytes are then left partly patched, so callers discard them.
pub fn retime_fragment(
    fragment: &mut [u8],
    decode_offset: u64,
    sequence_offset: u32,
) -> Result<()> {
    // Positions first (reading borrows the bytes), then the writes.
    let mut patches: Vec<Patch> = Vec::new();
    for moof in top_level_moofs(fragment)? {
        find_patches(&moof, &mut patches)?;
    }
    for p in patches {
        match p {
            Patch::Sequence { at, typ_offset } => {
                let old = u32::from_be_bytes(fragment[at..at + 4].try_into().expect("4 bytes"));
                let new = old.checked_add(sequence_offset).ok_or(Error::InvalidBox {
                    box_type: crate::FourCc(*b"mfhd"),
                    offset: typ_offset,
                    reason: format!("sequence number {old} + {sequence_offset} overflows"),
                })?;
                fragment[at..at + 4].copy_from_slice(&new.to_be_bytes());
            }
            Patch::Time32 { at, typ_offset } => {
                let old = u32::from_be_bytes(fragment[at..at + 4].try_into().expect("4 bytes"));
                let new = u64::from(old)
                    .checked_add(decode_offset)
                    .and_then(|t| u32::try_from(t).ok())
                    .ok_or(Error::InvalidBox {
                        box_type: crate::FourCc(*b"tfdt"),
                        offset: typ_offset,
                        reason: format!(
                            "a version 0 (32-bit) decode time {old} + {decode_offset} overflows"
                        ),
                    })?;
                fragment[at..at + 4].copy_from_slice(&new.to_be_bytes());
            }
            Patch::Time64 { at, typ_offset } => {
                let old = u64::from_be_bytes(fragment[at..at + 8].try_into().expect("8 bytes"));
                let new = old.checked_add(decode_offset).ok_or(Error::InvalidBox {
                    box_type: crate::FourCc(*b"tfdt"),
                    offset: typ_offset,
                    reason: format!("decode time {old} + {decode_offset} overflows"),
                })?;
                fragment[at..at + 8].copy_from_slice(&new.to_be_bytes());
            }
        }
    }
    Ok(())
}

enum Patch {
    Sequence { at: usize, typ_offset: usize },
    Time32 { at: usize, typ_offset: usize },
    Time64 { at: usize, typ_offset: usize },
}

fn find_patches(moof: &BoxRef<'_>, out: &mut Vec<Patch>) -> Result<()> {
    let mut mfhd = false;
    for child in moof.children() {
        let child = child?;
        match &child.typ.0 {
            b"mfhd" => {
                // version + flags, then the sequence number.
                if child.body.len() < 8 {
                    return Err(child.invalid("shorter than its 8-byte body"));
                }
                out.push(Patch::Sequence {
                    at: child.body_offset + 4,
                    typ_offset: child.offset,
                });
                mfhd = true;
            }
            b"traf" => {
                let tfdt = child.require(b"tfdt")?;
                let version = *tfdt
                    .body
                    .first()
                    .ok_or_else(|| tfdt.invalid("empty body"))?;
                let (len, patch) = match version {
                    0 => (
                        8,
                        Patch::Time32 {
                            at: tfdt.body_offset + 4,
                            typ_offset: tfdt.offset,
                        },
                    ),
                    1 => (
                        12,
                        Patch::Time64 {
                            at: tfdt.body_offset + 4,
                            typ_offset: tfdt.offset,
                        },
                    ),
                    v => return Err(tfdt.invalid(format!("unknown version {v}"))),
                };
                if tfdt.body.len() < len {
                    return Err(tfdt.invalid(format!("shorter than its {len}-byte body")));
                }
                out.push(patch);
            }
            _ => {}
        }
    }
    if !mfhd {
        return Err(Error::MissingBox {
            box_type: crate::FourCc(*b"mfhd"),
            parent: moof.typ,
            offset: moof.offset,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::testutil::{cat, init, video_samples, video_spec, Frag};
    use crate::mp4::{split_file, Fmp4Splitter, SplitEvent};
    use proptest::prelude::*;

    fn fragments_of(file: &[u8]) -> Vec<(Vec<u8>, crate::mp4::Fragment)> {
        let mut s = Fmp4Splitter::new();
        let mut out = Vec::new();
        for e in s.push(file).unwrap() {
            if let SplitEvent::Fragment { bytes, fragment } = e {
                out.push((bytes, fragment));
            }
        }
        out
    }

    #[test]
    fn shifts_decode_time_and_sequence_and_nothing_else() {
        let frag = Frag::new(3, 1024, video_samples(512, &[1024, 0, 512])).bytes();
        let file = cat(&[&init(&video_spec()), &frag]);
        let (bytes, before) = fragments_of(&file).remove(0);
        let mut moved = bytes.clone();
        retime_fragment(&mut moved, 30 * 512, 15).unwrap();
        assert_eq!(moved.len(), bytes.len());
        let (_, after) = fragments_of(&cat(&[&init(&video_spec()), &moved])).remove(0);
        assert_eq!(after.base_media_decode_time, 1024 + 30 * 512);
        assert_eq!(after.sequence_number, 18);
        assert_eq!(after.duration, before.duration);
        assert_eq!(after.sample_count, before.sample_count);
        assert_eq!(
            after.earliest_presentation_time,
            before.earliest_presentation_time + 30 * 512
        );
        // Only the eight tfdt bytes and the four mfhd bytes differ.
        let changed = bytes.iter().zip(&moved).filter(|(a, b)| a != b).count();
        assert!(changed <= 12, "{changed} bytes changed");
    }

    #[test]
    fn a_32_bit_decode_time_that_would_overflow_is_refused() {
        let mut f = Frag::new(1, u64::from(u32::MAX) - 10, video_samples(512, &[0]));
        f.tfdt_v1 = false;
        let file = cat(&[&init(&video_spec()), &f.bytes()]);
        let (mut bytes, _) = fragments_of(&file).remove(0);
        let err = retime_fragment(&mut bytes, 100, 0).unwrap_err().to_string();
        assert!(err.contains("tfdt") && err.contains("overflows"), "{err}");
        // Within range it is patched like a 64-bit one.
        let (mut bytes, _) = fragments_of(&file).remove(0);
        retime_fragment(&mut bytes, 5, 0).unwrap();
        let (_, _, frags) = split_file(&cat(&[&init(&video_spec()), &bytes])).unwrap();
        assert_eq!(frags[0].base_media_decode_time, u64::from(u32::MAX) - 5);
    }

    #[test]
    fn a_moof_without_mfhd_or_tfdt_is_an_error() {
        use crate::mp4::testutil::bx;
        let mut no_mfhd = bx(b"moof", &bx(b"traf", &[]));
        assert!(retime_fragment(&mut no_mfhd, 1, 1).is_err());
        let mut no_tfdt = bx(
            b"moof",
            &cat(&[
                &crate::mp4::testutil::full(b"mfhd", 0, 0, &[0, 0, 0, 1]),
                &bx(b"traf", &[]),
            ]),
        );
        assert!(retime_fragment(&mut no_tfdt, 1, 1).is_err());
    }

    proptest! {
        /// Garbage never panics, and what it changes stays within the bytes given.
        #[test]
        fn garbage_never_panics(mut data in proptest::collection::vec(any::<u8>(), 0..512),
                                offset in any::<u64>(), seq in any::<u32>()) {
            let len = data.len();
            let _ = retime_fragment(&mut data, offset, seq);
            prop_assert_eq!(data.len(), len);
        }

        /// Any valid fragment moved by any offset reads back moved by exactly that offset.
        #[test]
        fn any_shift_reads_back(tfdt in 0u64..(1 << 40), shift in 0u64..(1 << 40),
                                seq in 1u32..1000, seq_shift in 0u32..1000,
                                ctos in proptest::collection::vec(0i32..4096, 1..20)) {
            let frag = Frag::new(seq, tfdt, video_samples(512, &ctos)).bytes();
            let file = cat(&[&init(&video_spec()), &frag]);
            let (mut bytes, before) = fragments_of(&file).remove(0);
            retime_fragment(&mut bytes, shift, seq_shift).unwrap();
            let (_, after) = fragments_of(&cat(&[&init(&video_spec()), &bytes])).remove(0);
            prop_assert_eq!(after.base_media_decode_time, tfdt + shift);
            prop_assert_eq!(after.sequence_number, seq + seq_shift);
            prop_assert_eq!(after.duration, before.duration);
        }
    }
}
