//! ABR ladder maths: which renditions to encode for a source picture.
//!
//! A rung is named by the short side of the displayed picture ("720p" is 1280x720 landscape or
//! 720x1280 portrait), so portrait sources stay portrait and rotation metadata is honoured.

use serde::{Deserialize, Serialize};

/// One rendition to encode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    /// `"{short side}p"`, e.g. `"720p"`.
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Target video bitrate, bits/s.
    pub video_bitrate: u32,
    /// VBV max rate: 1.5 x the target.
    pub max_bitrate: u32,
    /// VBV buffer: 2 x the target.
    pub buffer_size: u32,
}

/// The source picture as probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceVideo {
    /// Coded size.
    pub width: u32,
    pub height: u32,
    /// Display rotation from metadata, degrees (0, 90, -90, 180, 270, ...).
    pub rotation: i32,
}

/// Candidate rungs as `(short side, bitrate in bits/s)`. The smallest is a fallback, used only
/// when the ladder would otherwise have fewer than two rungs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LadderSpec {
    pub rungs: Vec<(u32, u32)>,
}

impl Default for LadderSpec {
    fn default() -> Self {
        Self {
            rungs: vec![
                (1080, 4_500_000),
                (720, 2_800_000),
                (480, 1_400_000),
                (360, 800_000),
                (240, 400_000),
            ],
        }
    }
}

/// The displayed size: width and height swap for a quarter-turn rotation.
pub fn display_size(src: &SourceVideo) -> (u32, u32) {
    if src.rotation.rem_euclid(180) == 90 {
        (src.height, src.width)
    } else {
        (src.width, src.height)
    }
}

/// The coded size with non-square pixels made square: the width is stretched (or squeezed) by
/// the sample aspect ratio `sar` (`num:den`) and the height kept, so 720x576 at SAR 64:45 (16:9
/// PAL) is 1024x576. Every rung is then encoded square-pixel at the display aspect, as players
/// and every major platform expect. A zero or absent ratio counts as 1:1.
pub fn square_pixel_size(width: u32, height: u32, sar: (u32, u32)) -> (u32, u32) {
    let (num, den) = sar;
    if num == 0 || den == 0 || num == den {
        return (width, height);
    }
    let w = (u64::from(width) * u64::from(num) + u64::from(den) / 2) / u64::from(den);
    (w.clamp(1, u64::from(u32::MAX)) as u32, height)
}

/// Builds the ladder for `src`, highest rung first. Never upscales: rungs taller (short side)
/// than the source are dropped, and a source below every rung gets one rung at its own size
/// (rounded down to even) with the smallest rung's bitrate.
pub fn build_ladder(src: &SourceVideo, spec: &LadderSpec) -> Vec<Rung> {
    let (w, h) = display_size(src);
    let portrait = h > w;
    let (short, long) = (w.min(h), w.max(h));
    if short == 0 {
        return Vec::new();
    }
    let mut candidates = spec.rungs.clone();
    candidates.sort_by_key(|r| std::cmp::Reverse(r.0));
    candidates.dedup_by_key(|r| r.0);
    let Some(&smallest) = candidates.last() else {
        return Vec::new();
    };

    let fits: Vec<(u32, u32)> = candidates
        .iter()
        .copied()
        .filter(|r| r.0 <= short)
        .collect();
    let mut chosen: Vec<(u32, u32)> = fits.iter().copied().filter(|&r| r != smallest).collect();
    if chosen.len() < 2 && fits.contains(&smallest) {
        chosen.push(smallest);
    }

    let make = |rung_short: u32, rung_long: u32, bitrate: u32| {
        let (width, height) = if portrait {
            (rung_short, rung_long)
        } else {
            (rung_long, rung_short)
        };
        Rung {
            name: format!("{rung_short}p"),
            width,
            height,
            video_bitrate: bitrate,
            max_bitrate: (u64::from(bitrate) * 3)
                .div_ceil(2)
                .min(u64::from(u32::MAX)) as u32,
            buffer_size: bitrate.saturating_mul(2),
        }
    };

    if chosen.is_empty() {
        let s = floor_even(short);
        let l = floor_even(long);
        return vec![make(s, l, smallest.1)];
    }
    chosen
        .into_iter()
        .map(|(rung_short, bitrate)| {
            // Long side keeps the aspect ratio, rounded to the nearest even number.
            let exact = f64::from(long) * f64::from(rung_short) / f64::from(short);
            let rung_long = ((exact / 2.0).round() as u32 * 2).clamp(2, floor_even(long));
            make(floor_even(rung_short), rung_long, bitrate)
        })
        .collect()
}

fn floor_even(v: u32) -> u32 {
    (v & !1).max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(w: u32, h: u32, rotation: i32) -> Vec<(String, u32, u32)> {
        build_ladder(
            &SourceVideo {
                width: w,
                height: h,
                rotation,
            },
            &LadderSpec::default(),
        )
        .into_iter()
        .map(|r| (r.name, r.width, r.height))
        .collect()
    }

    fn s(name: &str, w: u32, h: u32) -> (String, u32, u32) {
        (name.to_string(), w, h)
    }

    #[test]
    fn full_hd_landscape() {
        assert_eq!(
            sizes(1920, 1080, 0),
            vec![
                s("1080p", 1920, 1080),
                s("720p", 1280, 720),
                s("480p", 854, 480),
                s("360p", 640, 360)
            ]
        );
    }

    #[test]
    fn bitrates_and_vbv() {
        let l = build_ladder(
            &SourceVideo {
                width: 1920,
                height: 1080,
                rotation: 0,
            },
            &LadderSpec::default(),
        );
        let rates: Vec<_> = l
            .iter()
            .map(|r| (r.video_bitrate, r.max_bitrate, r.buffer_size))
            .collect();
        assert_eq!(
            rates,
            vec![
                (4_500_000, 6_750_000, 9_000_000),
                (2_800_000, 4_200_000, 5_600_000),
                (1_400_000, 2_100_000, 2_800_000),
                (800_000, 1_200_000, 1_600_000)
            ]
        );
        let odd = build_ladder(
            &SourceVideo {
                width: 640,
                height: 360,
                rotation: 0,
            },
            &LadderSpec {
                rungs: vec![(360, 333_333)],
            },
        );
        assert_eq!((odd[0].max_bitrate, odd[0].buffer_size), (500_000, 666_666));
    }

    #[test]
    fn hd_source_is_never_upscaled() {
        assert_eq!(
            sizes(1280, 720, 0),
            vec![
                s("720p", 1280, 720),
                s("480p", 854, 480),
                s("360p", 640, 360)
            ]
        );
    }

    #[test]
    fn portrait_stays_portrait() {
        let expected = vec![
            s("720p", 720, 1280),
            s("480p", 480, 854),
            s("360p", 360, 640),
        ];
        assert_eq!(sizes(720, 1280, 0), expected);
        assert_eq!(sizes(1280, 720, 90), expected);
        assert_eq!(sizes(1280, 720, -90), expected);
        assert_eq!(sizes(1280, 720, 270), expected);
        assert_eq!(sizes(1280, 720, 180), sizes(1280, 720, 0));
    }

    #[test]
    fn display_size_swaps_for_quarter_turns() {
        let src = |rotation| SourceVideo {
            width: 1920,
            height: 1080,
            rotation,
        };
        assert_eq!(display_size(&src(0)), (1920, 1080));
        assert_eq!(display_size(&src(90)), (1080, 1920));
        assert_eq!(display_size(&src(-90)), (1080, 1920));
        assert_eq!(display_size(&src(180)), (1920, 1080));
        assert_eq!(display_size(&src(270)), (1080, 1920));
        assert_eq!(display_size(&src(-270)), (1080, 1920));
    }

    #[test]
    fn small_source_gets_the_240_fallback() {
        // 853/479 * 360 = 641.1 -> 642; 853/479 * 240 = 427.4 -> 428.
        assert_eq!(
            sizes(853, 479, 0),
            vec![s("360p", 642, 360), s("240p", 428, 240)]
        );
        assert_eq!(sizes(426, 240, 0), vec![s("240p", 426, 240)]);
    }

    #[test]
    fn tiny_source_gets_one_rung_at_its_own_size() {
        assert_eq!(sizes(160, 120, 0), vec![s("120p", 160, 120)]);
        assert_eq!(sizes(161, 121, 0), vec![s("120p", 160, 120)]);
        assert_eq!(sizes(1, 1, 0), vec![s("2p", 2, 2)]);
        let r = build_ladder(
            &SourceVideo {
                width: 160,
                height: 120,
                rotation: 0,
            },
            &LadderSpec::default(),
        );
        assert_eq!(r[0].video_bitrate, 400_000);
    }

    #[test]
    fn ultrawide_and_degenerate_sources() {
        // 2.4:1: short side 800.
        assert_eq!(
            sizes(1920, 800, 0),
            vec![
                s("720p", 1728, 720),
                s("480p", 1152, 480),
                s("360p", 864, 360)
            ]
        );
        assert_eq!(sizes(0, 0, 0), vec![]);
        assert!(build_ladder(
            &SourceVideo {
                width: 1920,
                height: 1080,
                rotation: 0
            },
            &LadderSpec { rungs: vec![] }
        )
        .is_empty());
    }

    #[test]
    fn anamorphic_sources_become_square_pixel_at_display_aspect() {
        // 16:9 PAL DVD/DV: 720x576 at SAR 64:45 shows as 1024x576.
        assert_eq!(square_pixel_size(720, 576, (64, 45)), (1024, 576));
        // 4:3 PAL: SAR 16:15 -> 768x576; NTSC 16:9: 720x480 at 32:27 -> 853x480.
        assert_eq!(square_pixel_size(720, 576, (16, 15)), (768, 576));
        assert_eq!(square_pixel_size(720, 480, (32, 27)), (853, 480));
        // HDV: 1440x1080 at 4:3 is 1920x1080.
        assert_eq!(square_pixel_size(1440, 1080, (4, 3)), (1920, 1080));
        assert_eq!(square_pixel_size(640, 360, (1, 1)), (640, 360));
        assert_eq!(square_pixel_size(640, 360, (0, 0)), (640, 360));
        let (w, h) = square_pixel_size(720, 576, (64, 45));
        assert_eq!(
            sizes(w, h, 0),
            vec![s("480p", 854, 480), s("360p", 640, 360)],
            "not 600x480 / 450x360"
        );
        // A rotated anamorphic source: the stretch applies to the coded width, then it turns.
        let (w, h) = square_pixel_size(720, 576, (64, 45));
        assert_eq!(
            sizes(w, h, 90),
            vec![s("480p", 480, 854), s("360p", 360, 640)]
        );
    }

    #[test]
    fn all_dimensions_even() {
        for (w, h) in [
            (853, 479),
            (1917, 1079),
            (999, 1001),
            (3840, 2160),
            (721, 405),
        ] {
            for r in build_ladder(
                &SourceVideo {
                    width: w,
                    height: h,
                    rotation: 0,
                },
                &LadderSpec::default(),
            ) {
                assert_eq!((r.width % 2, r.height % 2), (0, 0), "{w}x{h} -> {r:?}");
                assert!(r.width <= w && r.height <= h, "{w}x{h} -> {r:?}");
            }
        }
    }
}
