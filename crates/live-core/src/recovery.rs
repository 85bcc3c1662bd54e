//! What a crashed node's half-written session can still publish: its stored inits and segments,
//! read back by name, in order, with the publisher reconnections (epochs) found from the media
//! times. Parts, the published playlists (`live/…`) and anything unrecognised are not part of
//! a recording.

use std::collections::BTreeMap;

/// A rendition's stored files, sorted: `(epoch, name)` inits and `(number, name)` segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredFiles {
    pub inits: Vec<(u32, String)>,
    pub segments: Vec<(u64, String)>,
}

/// Groups object names relative to the recording's folder (`{rendition}/init-{e}.mp4`,
/// `{rendition}/seg-{n}.m4s`) by rendition. Renditions with no init cannot be decoded and are
/// left out.
pub fn group<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, StoredFiles> {
    let mut out: BTreeMap<String, StoredFiles> = BTreeMap::new();
    for name in names {
        let Some((rendition, file)) = name.split_once('/') else {
            continue;
        };
        if rendition == "live" || file.contains('/') {
            continue;
        }
        let num = |prefix: &str, suffix: &str| {
            file.strip_prefix(prefix)?
                .strip_suffix(suffix)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        };
        if let Some(e) = num("init-", ".mp4").and_then(|n| n.parse().ok()) {
            out.entry(rendition.into())
                .or_default()
                .inits
                .push((e, name.into()));
        } else if let Some(n) = num("seg-", ".m4s").and_then(|n| n.parse().ok()) {
            out.entry(rendition.into())
                .or_default()
                .segments
                .push((n, name.into()));
        }
    }
    out.retain(|_, f| !f.inits.is_empty());
    for f in out.values_mut() {
        f.inits.sort();
        f.segments.sort();
    }
    out
}

/// A stored segment's media times, from its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentTimes {
    pub start: u64,
    pub end: u64,
    pub timescale: u32,
}

/// The epoch of each segment and whether a discontinuity precedes it. Each publisher
/// connection restarts the encoder's clock, so a segment that starts well before the previous
/// one ended begins a new epoch.
pub fn epochs(segments: &[SegmentTimes]) -> Vec<(u32, bool)> {
    let mut out = Vec::with_capacity(segments.len());
    let (mut epoch, mut prev_end) = (0u32, None::<u64>);
    for s in segments {
        let half = u64::from(s.timescale.max(1)) / 2;
        let restarted = prev_end.is_some_and(|p| s.start.saturating_add(half) < p);
        if restarted {
            epoch += 1;
        }
        out.push((epoch, restarted));
        prev_end = Some(s.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_inits_and_segments_and_skips_everything_else() {
        let g = group([
            "720p/seg-10.m4s",
            "720p/init-0.mp4",
            "720p/seg-2.m4s",
            "720p/part-3-0.m4s",
            "720p/init-1.mp4",
            "live/720p.json",
            "live/master.m3u8",
            "360p/seg-1.m4s",
            "poster.jpg",
            "720p/seg-.m4s",
            "720p/seg-+1.m4s",
            "720p/x/seg-1.m4s",
            "audio/init-0.mp4",
        ]);
        assert_eq!(
            g.keys().collect::<Vec<_>>(),
            ["720p", "audio"],
            "360p has no init"
        );
        let v = &g["720p"];
        assert_eq!(
            v.inits,
            [(0, "720p/init-0.mp4".into()), (1, "720p/init-1.mp4".into())]
        );
        assert_eq!(
            v.segments,
            [(2, "720p/seg-2.m4s".into()), (10, "720p/seg-10.m4s".into())],
            "numeric order"
        );
        assert!(g["audio"].segments.is_empty());
    }

    #[test]
    fn a_clock_restart_starts_an_epoch_and_small_overlaps_do_not() {
        let t = |start, end| SegmentTimes {
            start,
            end,
            timescale: 1000,
        };
        assert_eq!(epochs(&[]), vec![]);
        assert_eq!(
            epochs(&[
                t(0, 2000),
                t(1800, 4000), // overlap under half a second: same clock
                t(0, 2000),    // the encoder restarted
                t(2000, 4000),
                t(100, 300),
            ]),
            vec![(0, false), (0, false), (1, true), (1, false), (2, true)]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(names in proptest::collection::vec("[a-z0-9/._+-]{0,24}", 0..40),
                        times in proptest::collection::vec((0u64..u64::MAX, 0u64..u64::MAX, 0u32..100_000), 0..40)) {
            let g = group(names.iter().map(String::as_str));
            for f in g.values() {
                proptest::prop_assert!(!f.inits.is_empty());
            }
            let t: Vec<SegmentTimes> = times
                .into_iter()
                .map(|(start, end, timescale)| SegmentTimes { start, end, timescale })
                .collect();
            proptest::prop_assert_eq!(epochs(&t).len(), t.len());
        }
    }
}
