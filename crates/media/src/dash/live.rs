//! Dynamic (live) MPD, ISO/IEC 23009-1 `type="dynamic"`, one `Period` per publisher connection.
//!
//! Each reconnect starts a new encoder with its own timeline and init segment, which DASH models
//! as a new Period: it starts at the session time of the reconnect (seconds since
//! `availabilityStartTime`) and carries its own `SegmentTimeline`, `startNumber` and
//! `presentationTimeOffset`. The whole session stays in the time-shift buffer (DVR), and once
//! the session ends the same periods are rendered as a `type="static"` on-demand MPD.

use std::fmt::Write as _;

use super::{
    esc, static_mpd_start, write_period, xs_duration, AdaptationSet, MPD_NAMESPACE, PROFILE,
    XML_DECLARATION,
};

/// `UTCTiming@schemeIdUri` for an HTTP URL that returns an ISO 8601 (xs:dateTime) time.
pub const UTC_TIMING_HTTP_ISO: &str = "urn:mpeg:dash:utc:http-iso:2014";

/// One publisher connection of a live session.
#[derive(Clone, Debug, PartialEq)]
pub struct LivePeriod {
    /// Unique within the session and stable across MPD updates (required in dynamic MPDs).
    pub id: String,
    /// Seconds from the session start (`availabilityStartTime`) to this period.
    pub start_s: f64,
    /// Representations whose timelines come from [`super::compress_timeline`], with
    /// `presentation_time_offset` set to the media time that plays at `start_s`.
    pub adaptation_sets: Vec<AdaptationSet>,
}

/// Low-latency DASH (DASH-IF IOP low-latency modes): the origin sends the segment being written
/// with chunked transfer, so a client may ask for it `availability_time_offset_s` before it is
/// complete, and plays `target_latency_s` behind live (`ServiceDescription`).
#[derive(Clone, Debug, PartialEq)]
pub struct LowLatency {
    /// Seconds before its end that a segment can be requested: the segment duration minus one
    /// chunk (part), as its first chunk is then available.
    pub availability_time_offset_s: f64,
    pub target_latency_s: f64,
    pub min_latency_s: f64,
    pub max_latency_s: f64,
}

/// The MPD of a live session, for as long as it runs and after it ends.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicMpd {
    /// RFC 3339 wall-clock time of the session start, the zero of every `Period@start`.
    pub availability_start_time: String,
    /// RFC 3339 time this version of the MPD was produced.
    pub publish_time: String,
    /// How often clients reload the MPD (typically one segment duration).
    pub minimum_update_period_s: f64,
    /// How far back clients may seek; cover the whole session for DVR.
    pub time_shift_buffer_depth_s: f64,
    /// How far behind the live edge clients play.
    pub suggested_presentation_delay_s: f64,
    pub min_buffer_time_s: f64,
    /// URL answering the current time as ISO 8601, so clients do not trust their own clocks.
    pub utc_timing_url: String,
    /// In order of `start_s`.
    pub periods: Vec<LivePeriod>,
    /// Low-latency delivery, while live: segments are served as they are written.
    pub low_latency: Option<LowLatency>,
    /// `Some(total seconds)` once the session ended: the MPD becomes a static, on-demand one
    /// with `mediaPresentationDuration` and the same periods (no update period, no
    /// availability times, no `UTCTiming`).
    pub ended: Option<f64>,
}

impl DynamicMpd {
    /// The MPD as an XML document.
    pub fn render(&self) -> String {
        let mut x = match self.ended {
            Some(duration_s) => static_mpd_start(duration_s, self.min_buffer_time_s),
            None => self.dynamic_mpd_start(),
        };
        let live_ll = self.low_latency.as_ref().filter(|_| self.ended.is_none());
        // Schema order: ServiceDescription precedes the periods.
        if let Some(ll) = live_ll {
            let ms = |s: f64| (s * 1000.0).round() as u64;
            let _ = writeln!(
                x,
                "  <ServiceDescription id=\"0\">\n    <Latency target=\"{}\" min=\"{}\" max=\"{}\"/>\n    \
                 <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>",
                ms(ll.target_latency_s),
                ms(ll.min_latency_s),
                ms(ll.max_latency_s)
            );
        }
        let chunked = live_ll.map(|ll| ll.availability_time_offset_s);
        for period in &self.periods {
            write_period(
                &mut x,
                &period.id,
                period.start_s,
                &period.adaptation_sets,
                chunked,
            );
        }
        // Schema order: UTCTiming follows the periods.
        if self.ended.is_none() {
            let _ = writeln!(
                x,
                "  <UTCTiming schemeIdUri=\"{UTC_TIMING_HTTP_ISO}\" value=\"{}\"/>",
                esc(&self.utc_timing_url)
            );
        }
        x.push_str("</MPD>\n");
        x
    }

    fn dynamic_mpd_start(&self) -> String {
        let mut x = String::from(XML_DECLARATION);
        let _ = writeln!(
            x,
            "<MPD xmlns=\"{MPD_NAMESPACE}\" profiles=\"{PROFILE}\" type=\"dynamic\" \
             availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"{}\" \
             timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\" minBufferTime=\"{}\">",
            esc(&self.availability_start_time),
            esc(&self.publish_time),
            xs_duration(self.minimum_update_period_s),
            xs_duration(self.time_shift_buffer_depth_s),
            xs_duration(self.suggested_presentation_delay_s),
            xs_duration(self.min_buffer_time_s)
        );
        x
    }
}

#[cfg(test)]
mod tests {
    use super::super::{compress_timeline, ContentType, Representation};
    use super::*;

    /// A 720p video set at timescale 15360 with the given `(start, duration)` segments.
    fn video(start_number: u64, segments: &[(u64, u64)], pto: u64) -> Vec<AdaptationSet> {
        vec![AdaptationSet {
            id: 0,
            content_type: ContentType::Video,
            mime_type: "video/mp4".into(),
            segment_alignment: true,
            representations: vec![Representation {
                id: "720p".into(),
                bandwidth: 2_800_000,
                codecs: "avc1.64001f".into(),
                width: Some(1280),
                height: Some(720),
                frame_rate: Some("30".into()),
                audio_sampling_rate: None,
                audio_channels: None,
                timescale: 15360,
                initialization: format!("720p/init-{start_number}.mp4"),
                media: "720p/seg-$Number$.m4s".into(),
                start_number,
                timeline: compress_timeline(segments),
                presentation_time_offset: pto,
            }],
        }]
    }

    fn mpd(periods: Vec<LivePeriod>) -> DynamicMpd {
        DynamicMpd {
            availability_start_time: "2026-11-25T13:00:00.000Z".into(),
            publish_time: "2026-11-25T13:00:20.000Z".into(),
            minimum_update_period_s: 2.0,
            time_shift_buffer_depth_s: 20.0,
            suggested_presentation_delay_s: 6.0,
            min_buffer_time_s: 2.0,
            utc_timing_url: "https://tv.example/api/time?a=1&b=2".into(),
            periods,
            low_latency: None,
            ended: None,
        }
    }

    /// First connection: three 2 s segments and a 1.5 s one (the publisher dropped).
    fn first_period() -> LivePeriod {
        LivePeriod {
            id: "p0".into(),
            start_s: 0.0,
            adaptation_sets: video(
                1,
                &[(0, 30720), (30720, 30720), (61440, 30720), (92160, 23040)],
                0,
            ),
        }
    }

    /// Reconnect 10 s into the session: segment 5 onwards, on a timeline starting at 1024.
    fn second_period() -> LivePeriod {
        LivePeriod {
            id: "p1".into(),
            start_s: 10.0,
            adaptation_sets: video(5, &[(1024, 30720), (31744, 30720)], 1024),
        }
    }

    const PERIOD_0: &str = r#"  <Period id="p0" start="PT0.000S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="720p" bandwidth="2800000" codecs="avc1.64001f" width="1280" height="720" frameRate="30">
        <SegmentTemplate timescale="15360" initialization="720p/init-1.mp4" media="720p/seg-$Number$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="30720" r="2"/>
            <S d="23040"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
"#;

    const PERIOD_1: &str = r#"  <Period id="p1" start="PT10.000S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="720p" bandwidth="2800000" codecs="avc1.64001f" width="1280" height="720" frameRate="30">
        <SegmentTemplate timescale="15360" initialization="720p/init-5.mp4" media="720p/seg-$Number$.m4s" startNumber="5" presentationTimeOffset="1024">
          <SegmentTimeline>
            <S t="1024" d="30720" r="1"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
"#;

    const DYNAMIC_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="dynamic" availabilityStartTime="2026-11-25T13:00:00.000Z" publishTime="2026-11-25T13:00:20.000Z" minimumUpdatePeriod="PT2.000S" timeShiftBufferDepth="PT20.000S" suggestedPresentationDelay="PT6.000S" minBufferTime="PT2.000S">
"#;

    const DYNAMIC_END: &str = r#"  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="https://tv.example/api/time?a=1&amp;b=2"/>
</MPD>
"#;

    #[test]
    fn one_period_live() {
        let expected = format!("{DYNAMIC_START}{PERIOD_0}{DYNAMIC_END}");
        assert_eq!(mpd(vec![first_period()]).render(), expected);
    }

    #[test]
    fn reconnect_adds_a_period() {
        let expected = format!("{DYNAMIC_START}{PERIOD_0}{PERIOD_1}{DYNAMIC_END}");
        assert_eq!(
            mpd(vec![first_period(), second_period()]).render(),
            expected
        );
    }

    #[test]
    fn ended_session_is_a_static_mpd() {
        let mut m = mpd(vec![first_period(), second_period()]);
        m.ended = Some(14.0);
        let expected = format!(
            "{}{PERIOD_0}{PERIOD_1}</MPD>\n",
            r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT14.000S" minBufferTime="PT2.000S">
"#
        );
        assert_eq!(m.render(), expected);
    }

    fn low_latency() -> LowLatency {
        LowLatency {
            availability_time_offset_s: 1.5,
            target_latency_s: 2.5,
            min_latency_s: 1.0,
            max_latency_s: 6.0,
        }
    }

    #[test]
    fn low_latency_states_the_target_and_lets_players_predict_segments() {
        let mut m = mpd(vec![first_period(), second_period()]);
        m.low_latency = Some(low_latency());
        let text = m.render();
        let service = "  <ServiceDescription id=\"0\">\n    \
                       <Latency target=\"2500\" min=\"1000\" max=\"6000\"/>\n    \
                       <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>\n  \
                       <Period id=\"p0\"";
        assert!(text.contains(service), "{text}");
        // The first period's last segment is short (the publisher dropped): its timeline stays.
        assert!(text.contains(
            "startNumber=\"1\" availabilityTimeOffset=\"1.5\" availabilityTimeComplete=\"false\">\n          <SegmentTimeline>"
        ), "{text}");
        // Segments of one length: a template with a duration, and no timeline to grow.
        assert!(
            text.contains(
                "startNumber=\"5\" presentationTimeOffset=\"1024\" availabilityTimeOffset=\"1.5\" \
             availabilityTimeComplete=\"false\" duration=\"30720\"/>\n      </Representation>"
            ),
            "{text}"
        );
        assert_eq!(text.matches("<SegmentTimeline>").count(), 1, "{text}");

        // Once ended it is an ordinary static MPD: timelines, no low-latency attributes.
        m.ended = Some(14.0);
        let ended = m.render();
        assert!(!ended.contains("ServiceDescription") && !ended.contains("availabilityTime"));
        assert_eq!(ended.matches("<SegmentTimeline>").count(), 2, "{ended}");
    }

    #[test]
    fn constant_durations() {
        use super::super::constant_duration;
        let t = |segs: &[(u64, u64)]| constant_duration(&compress_timeline(segs));
        assert_eq!(t(&[]), None);
        assert_eq!(t(&[(0, 30720)]), Some(30720));
        assert_eq!(
            t(&[(0, 30720), (30720, 30720), (61440, 30720)]),
            Some(30720)
        );
        // AAC priming: the first audio segment is a few samples short.
        assert_eq!(
            t(&[(0, 98296), (98296, 98304), (196600, 98304)]),
            Some(98304)
        );
        // A short last segment, a gap, a long first one or varying lengths need a timeline.
        assert_eq!(t(&[(0, 30720), (30720, 23040)]), None);
        assert_eq!(t(&[(0, 30720), (40000, 30720)]), None);
        assert_eq!(t(&[(0, 40000), (40000, 30720)]), None);
        assert_eq!(t(&[(0, 20000), (20000, 30720)]), None);
        assert_eq!(t(&[(0, 0)]), None);
    }
}
