//! Low-Latency HLS live media playlists (RFC 8216bis): `EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
//! `EXT-X-SERVER-CONTROL`, blocking reload and playlist delta updates (`EXT-X-SKIP`).
//!
//! The caller keeps a [`LivePlaylist`] per rendition, appends a [`LiveSegment`] each time a
//! segment completes and a [`Part`] each time a fragment does, and renders on every request:
//! a plain reload with `render(false)`, a `_HLS_skip=YES` request with `render(true)`.
//! A `_HLS_msn`/`_HLS_part` request is held until [`LivePlaylist::has_part`] is true.
//!
//! Numbers in attributes (`CAN-SKIP-UNTIL`, `PART-HOLD-BACK`, `PART-TARGET`) have at most three
//! decimals with trailing zeros trimmed (`6`, `1.5`); durations (`EXTINF`, `EXT-X-PART`) keep
//! five decimals like the VOD playlists.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{quoted_uri, uri_line};

/// `EXT-X-VERSION` of live playlists: `EXT-X-SKIP` needs 9, and the version must not change
/// between a full reload and a delta update, so 9 is written always.
pub const LIVE_VERSION: u32 = 9;

/// `CAN-SKIP-UNTIL` in target durations. 6 is the spec's minimum and keeps delta updates as
/// small as they are allowed to be.
pub const SKIP_TARGETS: u64 = 6;

/// `PART-HOLD-BACK` in part targets: at least 2 is required, 3 is the recommended value.
pub const PART_HOLD_BACK_PARTS: f64 = 3.0;

/// Segments are listed with their parts while they end less than this many target durations
/// before the live edge; older parts should be removed from the playlist.
pub const PART_WINDOW_TARGETS: f64 = 3.0;

/// One LL-HLS partial segment (`EXT-X-PART`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub uri: String,
    /// Seconds; at most [`LivePlaylist::part_target`].
    pub duration: f64,
    /// Starts with a sync sample (`INDEPENDENT=YES`).
    pub independent: bool,
}

/// A completed media segment of a live playlist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveSegment {
    /// Media sequence number.
    pub number: u64,
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Emit `#EXT-X-DISCONTINUITY` before this segment (the publisher reconnected).
    pub discontinuity: bool,
    /// `EXT-X-MAP` to state before this segment: required on the first segment of the playlist
    /// and after a discontinuity that changes the init segment.
    pub map_uri: Option<String>,
    /// RFC 3339 with milliseconds, e.g. `2026-11-25T13:00:00.000Z`, written as
    /// `EXT-X-PROGRAM-DATE-TIME` before the segment. Set it on the first segment and after each
    /// discontinuity (or on every segment).
    pub program_date_time: Option<String>,
    /// The parts this segment was published as. Only listed while the segment is recent (see
    /// [`PART_WINDOW_TARGETS`]); older segments may keep or drop them.
    pub parts: Vec<Part>,
}

/// `EXT-X-RENDITION-REPORT`: where another rendition's live edge is, so that a player switching
/// to it can ask for its next part at once instead of loading its playlist first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RenditionReport {
    /// The other rendition's media playlist, relative to this one.
    pub uri: String,
    /// Its last segment with media: the one in progress once it has a part.
    pub last_msn: u64,
    /// The index of its last part within `last_msn`, when it has parts.
    pub last_part: Option<u64>,
}

/// A live (or just ended) LL-HLS media playlist for one rendition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LivePlaylist {
    /// Whole seconds, at least every segment's duration (see [`super::target_duration`]).
    pub target_duration: u64,
    /// Seconds, at least every part's duration (`PART-TARGET` is rounded up to the ms).
    pub part_target: f64,
    /// `EXT-X-MEDIA-SEQUENCE`: the number of `segments[0]`.
    pub first_number: u64,
    /// `EXT-X-DISCONTINUITY-SEQUENCE`: discontinuities removed from the front of the playlist
    /// (0 for `EVENT` playlists, which keep every segment).
    pub discontinuity_sequence: u64,
    /// `EXT-X-PLAYLIST-TYPE:EVENT`: the whole session is kept and seekable to its start.
    pub playlist_type_event: bool,
    /// Completed segments, in order, numbered consecutively from `first_number`.
    pub segments: Vec<LiveSegment>,
    /// Parts of the segment in progress (number [`LivePlaylist::next_number`]).
    pub open_parts: Vec<Part>,
    /// `EXT-X-MAP` for the segment in progress, when it starts a new init.
    pub open_map_uri: Option<String>,
    /// The segment in progress follows a discontinuity.
    pub open_discontinuity: bool,
    /// `EXT-X-PROGRAM-DATE-TIME` of the segment in progress.
    pub open_program_date_time: Option<String>,
    /// URI of the next part (`EXT-X-PRELOAD-HINT:TYPE=PART`).
    pub preload_hint: Option<String>,
    /// Emit `#EXT-X-ENDLIST`. An ended playlist lists completed segments only: no parts, no
    /// preload hint, no rendition reports, and the `open_*` fields are ignored.
    pub ended: bool,
    /// The session's other renditions (written last, while live).
    pub rendition_reports: Vec<RenditionReport>,
}

impl LivePlaylist {
    /// Media sequence number of the segment in progress (the next one to complete).
    pub fn next_number(&self) -> u64 {
        self.first_number + self.segments.len() as u64
    }

    /// `CAN-SKIP-UNTIL` in seconds: [`SKIP_TARGETS`] target durations.
    pub fn can_skip_until(&self) -> f64 {
        (SKIP_TARGETS * self.target_duration) as f64
    }

    /// Whether a blocking reload for `_HLS_msn=msn` (and `_HLS_part=part`, when given) can be
    /// answered now:
    ///
    /// - a completed segment (or one already removed from the playlist) satisfies any request
    ///   for it, except that a part index beyond its last part means part 0 of the following
    ///   segment, as the spec requires (a client that does not yet know the segment closed asks
    ///   for one part too many);
    /// - the segment in progress satisfies `part: Some(p)` once `p + 1` parts exist, and never
    ///   `part: None` (that asks for the whole segment);
    /// - anything later is not there yet;
    /// - once the playlist has ended every request is answered: nothing more will be added.
    ///
    /// A completed segment with no recorded parts accepts any part index. Rejecting requests too
    /// far ahead (an `_HLS_msn` more than two beyond the last segment gets a 400) is the
    /// server's job.
    pub fn has_part(&self, msn: u64, part: Option<u64>) -> bool {
        if self.ended || msn < self.first_number {
            return true;
        }
        let next = self.next_number();
        if msn < next {
            let parts = &self.segments[(msn - self.first_number) as usize].parts;
            return match part {
                Some(p) if !parts.is_empty() && p >= parts.len() as u64 => {
                    self.has_part(msn + 1, Some(0))
                }
                _ => true,
            };
        }
        msn == next && part.is_some_and(|p| (self.open_parts.len() as u64) > p)
    }

    /// Number of leading segments a delta update replaces with `EXT-X-SKIP`: those that end at
    /// least `CAN-SKIP-UNTIL` seconds before the end of the last completed segment, i.e. the
    /// segments kept always cover at least `CAN-SKIP-UNTIL` seconds.
    pub fn skippable_segments(&self) -> usize {
        let until = self.can_skip_until();
        if until <= 0.0 {
            // No target duration, no boundary: skipping everything would drop the map too.
            return 0;
        }
        let mut kept = 0.0;
        for (i, s) in self.segments.iter().enumerate().rev() {
            // A microsecond of slack keeps float sums (0.1 + 0.2) from moving the boundary.
            if kept + 1e-6 >= until {
                return i + 1;
            }
            kept += s.duration;
        }
        0
    }

    /// The playlist text, lines ending in `\n`. With `skip`, a delta update (`_HLS_skip=YES`):
    /// the [`skippable_segments`](Self::skippable_segments) are replaced by one `EXT-X-SKIP`
    /// line, their discontinuities are added to `EXT-X-DISCONTINUITY-SEQUENCE`, and the
    /// `EXT-X-MAP` in effect is restated before the first listed segment. When nothing is old
    /// enough to skip, the full playlist is rendered.
    pub fn render(&self, skip: bool) -> String {
        let skipped = if skip { self.skippable_segments() } else { 0 };
        let (gone, listed) = self.segments.split_at(skipped);
        let mut out = String::new();
        self.write_header(&mut out, gone);
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }

        // Parts are listed for segments ending within the window before the live edge, which
        // includes the parts of the segment in progress.
        let open: f64 = self.open_parts.iter().map(|p| p.duration).sum();
        let window = PART_WINDOW_TARGETS * self.target_duration as f64;
        let mut to_edge: f64 = open + listed.iter().map(|s| s.duration).sum::<f64>();
        // The map a delta-update client has not seen: the last one stated in the skipped range.
        let mut pending_map = gone.iter().rev().find_map(|s| s.map_uri.as_deref());
        for segment in listed {
            to_edge -= segment.duration;
            let map = segment.map_uri.as_deref().or(pending_map.take());
            write_segment_tags(
                &mut out,
                segment.discontinuity,
                map,
                segment.program_date_time.as_deref(),
            );
            if !self.ended && to_edge < window {
                write_parts(&mut out, &segment.parts);
            }
            let _ = writeln!(out, "#EXTINF:{:.5},", segment.duration);
            out.push_str(&uri_line(&segment.uri));
            out.push('\n');
        }

        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
            return out;
        }
        // Segment tags only make sense in front of a part; until the first part exists the
        // preload hint alone announces the new segment.
        if !self.open_parts.is_empty() {
            write_segment_tags(
                &mut out,
                self.open_discontinuity,
                self.open_map_uri.as_deref().or(pending_map),
                self.open_program_date_time.as_deref(),
            );
            write_parts(&mut out, &self.open_parts);
        }
        if let Some(uri) = &self.preload_hint {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI={}", quoted_uri(uri));
        }
        for r in &self.rendition_reports {
            let _ = write!(
                out,
                "#EXT-X-RENDITION-REPORT:URI={},LAST-MSN={}",
                quoted_uri(&r.uri),
                r.last_msn
            );
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        out
    }

    /// Header lines; `gone` are the segments a delta update skips.
    fn write_header(&self, out: &mut String, gone: &[LiveSegment]) {
        let part_target = ceil_ms(self.part_target);
        out.push_str("#EXTM3U\n");
        let _ = writeln!(out, "#EXT-X-VERSION:{LIVE_VERSION}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={}",
            decimal(self.can_skip_until()),
            decimal(PART_HOLD_BACK_PARTS * part_target)
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", decimal(part_target));
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.first_number);
        // Skipped EXT-X-DISCONTINUITY tags are no longer counted by the client, so the sequence
        // number of the first listed segment has to carry them.
        let discontinuities =
            self.discontinuity_sequence + gone.iter().filter(|s| s.discontinuity).count() as u64;
        if discontinuities > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities}");
        }
        if self.playlist_type_event {
            out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n");
        }
        // No EXT-X-INDEPENDENT-SEGMENTS: it would claim every part decodes on its own.
    }
}

fn write_segment_tags(out: &mut String, discontinuity: bool, map: Option<&str>, pdt: Option<&str>) {
    if discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    if let Some(map) = map {
        let _ = writeln!(out, "#EXT-X-MAP:URI={}", quoted_uri(map));
    }
    if let Some(pdt) = pdt {
        let clean: String = pdt.chars().filter(|c| !c.is_control()).collect();
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{clean}");
    }
}

fn write_parts(out: &mut String, parts: &[Part]) {
    for part in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI={}",
            part.duration,
            quoted_uri(&part.uri)
        );
        if part.independent {
            out.push_str(",INDEPENDENT=YES");
        }
        out.push('\n');
    }
}

/// Seconds rounded up to the millisecond, so an advertised maximum never understates (a part of
/// 0.5004 s must not exceed `PART-TARGET`). The slack keeps 0.5 from becoming 0.501.
fn ceil_ms(seconds: f64) -> f64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0 - 1e-6).ceil() / 1000.0
    } else {
        0.0
    }
}

/// A decimal-floating-point attribute value: at most three decimals, trailing zeros trimmed.
fn decimal(x: f64) -> String {
    let x = if x.is_finite() { x.max(0.0) } else { 0.0 };
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(uri: &str, duration: f64, independent: bool) -> Part {
        Part {
            uri: uri.into(),
            duration,
            independent,
        }
    }

    /// Segment `n` of 2 s in four 0.5 s parts, the first independent.
    fn seg(n: u64) -> LiveSegment {
        LiveSegment {
            number: n,
            uri: format!("{n}.m4s"),
            duration: 2.0,
            parts: (0..4)
                .map(|i| part(&format!("{n}.{i}.m4s"), 0.5, i == 0))
                .collect(),
            ..Default::default()
        }
    }

    fn live(first: u64, count: u64) -> LivePlaylist {
        let mut segments: Vec<LiveSegment> = (first..first + count).map(seg).collect();
        segments[0].map_uri = Some("init.mp4".into());
        segments[0].program_date_time = Some("2026-11-25T13:00:00.000Z".into());
        let next = first + count;
        LivePlaylist {
            target_duration: 2,
            part_target: 0.5,
            first_number: first,
            playlist_type_event: true,
            segments,
            open_parts: vec![
                part(&format!("{next}.0.m4s"), 0.5, true),
                part(&format!("{next}.1.m4s"), 0.5, false),
            ],
            preload_hint: Some(format!("{next}.2.m4s")),
            ..Default::default()
        }
    }

    const HEADER: &str = "#EXTM3U\n\
                          #EXT-X-VERSION:9\n\
                          #EXT-X-TARGETDURATION:2\n\
                          #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=1.5\n\
                          #EXT-X-PART-INF:PART-TARGET=0.5\n";

    #[test]
    fn rendition_reports_come_last_and_only_while_live() {
        let mut p = live(1, 4);
        p.rendition_reports = vec![
            RenditionReport {
                uri: "../360p/index.m3u8".into(),
                last_msn: 5,
                last_part: Some(1),
            },
            RenditionReport {
                uri: "../audio/index.m3u8".into(),
                last_msn: 4,
                last_part: None,
            },
        ];
        let text = p.render(false);
        assert!(
            text.ends_with(
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.2.m4s\"\n\
                 #EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\",LAST-MSN=5,LAST-PART=1\n\
                 #EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=4\n"
            ),
            "{text}"
        );
        // Delta updates carry them too: a player needs them whichever form it loads.
        assert!(p
            .render(true)
            .contains("#EXT-X-RENDITION-REPORT:URI=\"../360p/index.m3u8\""));
        p.ended = true;
        assert!(!p.render(false).contains("RENDITION-REPORT"));
    }

    #[test]
    fn live_playlist_lists_recent_parts_and_preload_hint() {
        // Live edge at 9 s: segment 1 ends 7 s before it (beyond 3 × 2 s), so its parts go.
        let text = live(1, 4).render(false);
        let expected = format!(
            "{HEADER}\
             #EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:00.000Z\n\
             #EXTINF:2.00000,\n\
             1.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"2.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"2.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"2.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"2.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             2.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"3.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"3.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"3.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"3.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             3.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"4.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"4.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"4.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"4.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             4.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"5.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"5.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.2.m4s\"\n"
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn reconnect_in_the_open_segment_states_its_tags_before_its_parts() {
        let mut p = live(7, 1);
        p.playlist_type_event = false;
        p.discontinuity_sequence = 2;
        // 15 frames at 29.97 fps; PART-TARGET is rounded up, PART-HOLD-BACK follows it.
        p.part_target = 0.5005;
        p.open_discontinuity = true;
        p.open_map_uri = Some("init-2.mp4".into());
        p.open_program_date_time = Some("2026-11-25T13:05:00.250Z".into());
        p.open_parts.truncate(1);
        p.preload_hint = Some("8.1.m4s".into());
        assert_eq!(
            p.render(false),
            "#EXTM3U\n\
             #EXT-X-VERSION:9\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12,PART-HOLD-BACK=1.503\n\
             #EXT-X-PART-INF:PART-TARGET=0.501\n\
             #EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:2\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:00.000Z\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"7.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"7.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"7.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"7.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             7.m4s\n\
             #EXT-X-DISCONTINUITY\n\
             #EXT-X-MAP:URI=\"init-2.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:05:00.250Z\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"8.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.1.m4s\"\n"
        );

        // Before the first part of the new segment only the hint is written.
        p.open_parts.clear();
        p.preload_hint = Some("8.0.m4s".into());
        assert!(p
            .render(false)
            .ends_with("7.m4s\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"8.0.m4s\"\n"));
    }

    #[test]
    fn ended_playlist_drops_parts_hint_and_open_segment() {
        let mut p = live(1, 2);
        p.ended = true;
        let expected = format!(
            "{HEADER}\
             #EXT-X-MEDIA-SEQUENCE:1\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:00.000Z\n\
             #EXTINF:2.00000,\n\
             1.m4s\n\
             #EXTINF:2.00000,\n\
             2.m4s\n\
             #EXT-X-ENDLIST\n"
        );
        assert_eq!(p.render(false), expected);
    }

    #[test]
    fn delta_update_skips_old_segments_and_restates_the_map() {
        // 8 × 2 s: the last 6 cover CAN-SKIP-UNTIL (12 s), so segments 10 and 11 are skipped,
        // with the discontinuity and map of 11 (a reconnect).
        let mut p = live(10, 8);
        p.discontinuity_sequence = 3;
        p.segments[1].discontinuity = true;
        p.segments[1].map_uri = Some("init-2.mp4".into());
        for s in &mut p.segments[..5] {
            s.parts.clear();
        }
        p.open_parts.clear();
        p.preload_hint = Some("18.0.m4s".into());
        assert_eq!(p.skippable_segments(), 2);
        let expected = format!(
            "{HEADER}\
             #EXT-X-MEDIA-SEQUENCE:10\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:4\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-SKIP:SKIPPED-SEGMENTS=2\n\
             #EXT-X-MAP:URI=\"init-2.mp4\"\n\
             #EXTINF:2.00000,\n\
             12.m4s\n\
             #EXTINF:2.00000,\n\
             13.m4s\n\
             #EXTINF:2.00000,\n\
             14.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"15.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"15.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"15.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"15.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             15.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"16.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"16.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"16.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"16.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             16.m4s\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"17.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"17.1.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"17.2.m4s\"\n\
             #EXT-X-PART:DURATION=0.50000,URI=\"17.3.m4s\"\n\
             #EXTINF:2.00000,\n\
             17.m4s\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"18.0.m4s\"\n"
        );
        assert_eq!(p.render(true), expected);

        // The full playlist still states everything.
        let full = p.render(false);
        assert!(full.contains("#EXT-X-DISCONTINUITY-SEQUENCE:3\n"));
        assert!(full.contains(
            "10.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-2.mp4\"\n#EXTINF:2.00000,\n11.m4s\n"
        ));
        assert!(!full.contains("#EXT-X-SKIP"));
    }

    #[test]
    fn skip_boundary_counts_back_whole_segments() {
        let skippable = |durations: &[f64]| {
            LivePlaylist {
                target_duration: 2,
                segments: durations
                    .iter()
                    .map(|&duration| LiveSegment {
                        duration,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
            .skippable_segments()
        };
        assert_eq!(skippable(&[]), 0);
        let mut zero_target = LivePlaylist::default();
        zero_target.segments.push(LiveSegment::default());
        assert_eq!(zero_target.skippable_segments(), 0);
        assert_eq!(skippable(&[2.0; 6]), 0);
        assert_eq!(skippable(&[2.0; 7]), 1);
        // 11.9 s after the first segment: not enough, keep it.
        assert_eq!(skippable(&[2.0, 1.9, 2.0, 2.0, 2.0, 2.0, 2.0]), 0);
        // Float sums that land a hair under 12 still count as 12.
        assert_eq!(skippable(&[1.0, 1.2, 1.2, 1.2, 1.2, 1.2, 2.0, 2.0, 2.0]), 1);
    }

    #[test]
    fn delta_update_with_nothing_old_enough_is_the_full_playlist() {
        let p = live(1, 4);
        assert_eq!(p.render(true), p.render(false));
    }

    #[test]
    fn delta_update_keeps_a_map_stated_on_the_first_listed_segment() {
        let mut p = live(1, 7);
        p.segments[1].map_uri = Some("init-2.mp4".into());
        let text = p.render(true);
        assert!(text.contains(
            "#EXT-X-SKIP:SKIPPED-SEGMENTS=1\n#EXT-X-MAP:URI=\"init-2.mp4\"\n#EXTINF:2.00000,\n2.m4s\n"
        ));
        assert_eq!(text.matches("#EXT-X-MAP").count(), 1);
    }

    #[test]
    fn blocking_reload_conditions() {
        // Segments 5 and 6 complete (4 parts each), segment 7 open with 2 parts.
        let mut p = live(5, 2);
        assert_eq!(p.next_number(), 7);
        assert!(
            p.has_part(4, None),
            "removed from the playlist: long complete"
        );
        assert!(p.has_part(5, None));
        assert!(p.has_part(6, Some(3)));
        assert!(p.has_part(7, Some(0)));
        assert!(p.has_part(7, Some(1)));
        assert!(!p.has_part(7, Some(2)));
        assert!(!p.has_part(7, None), "the open segment is not complete");
        assert!(!p.has_part(8, Some(0)));
        assert!(!p.has_part(8, None));
        // Part 4 of segment 6 does not exist: it means part 0 of segment 7 (there) …
        assert!(p.has_part(6, Some(4)));
        // … and of segment 8 for the open segment's successor (not there yet).
        p.open_parts.clear();
        assert!(!p.has_part(6, Some(4)));
        assert!(p.has_part(5, Some(9)), "segment 6 is complete");
        // Without recorded parts a complete segment accepts any part index.
        p.segments[1].parts.clear();
        assert!(p.has_part(6, Some(4)));
        // An ended playlist answers everything.
        p.ended = true;
        assert!(p.has_part(100, Some(0)));
    }

    #[test]
    fn attribute_numbers() {
        assert_eq!(decimal(6.0), "6");
        assert_eq!(decimal(12.0), "12");
        assert_eq!(decimal(1.5), "1.5");
        assert_eq!(decimal(0.3333), "0.333");
        assert_eq!(decimal(10.0), "10");
        assert_eq!(decimal(0.0), "0");
        assert_eq!(decimal(f64::NAN), "0");
        assert_eq!(ceil_ms(0.5), 0.5);
        assert_eq!(ceil_ms(0.5004), 0.501);
        assert_eq!(ceil_ms(-1.0), 0.0);
    }

    #[test]
    fn uris_and_dates_cannot_break_lines() {
        let mut p = live(1, 1);
        p.segments[0].program_date_time = Some("2026-11-25T13:00:00.000Z\n#EVIL".into());
        p.open_parts[0].uri = "a\"b.m4s".into();
        let text = p.render(false);
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2026-11-25T13:00:00.000Z#EVIL\n"));
        assert!(text.contains("URI=\"a%22b.m4s\""));
    }
}
