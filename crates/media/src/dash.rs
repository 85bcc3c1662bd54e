//! MPEG-DASH manifest (MPD) writers, ISO/IEC 23009-1 `isoff-live` profile: `SegmentTemplate` +
//! `SegmentTimeline` per representation, pointing at the same CMAF init and media segments the
//! HLS playlists use. [`StaticMpd`] is a single-period on-demand presentation; [`live`] renders
//! the dynamic, multi-period MPD of a live session.

use std::fmt::Write as _;

pub mod live;

pub use live::{DynamicMpd, LivePeriod, LowLatency};

/// DASH profile written into the MPD.
pub const PROFILE: &str = "urn:mpeg:dash:profile:isoff-live:2011";
/// Scheme of `AudioChannelConfiguration` values that are plain channel counts.
pub const AUDIO_CHANNEL_SCHEME: &str = "urn:mpeg:dash:23003:3:audio_channel_configuration:2011";
const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
const MPD_NAMESPACE: &str = "urn:mpeg:dash:schema:mpd:2011";

/// One `S` element: `r` extra repeats of segments of duration `d` starting at `t`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub t: u64,
    pub d: u64,
    pub r: u32,
}

/// Run-length compresses `(start, duration)` segments into `S` entries: a segment joins the
/// previous run when it has the same duration and starts exactly where the run ends.
pub fn compress_timeline(durations_with_starts: &[(u64, u64)]) -> Vec<TimelineEntry> {
    let mut out: Vec<TimelineEntry> = Vec::new();
    for &(start, d) in durations_with_starts {
        if let Some(last) = out.last_mut() {
            let run_end = u128::from(last.t) + u128::from(last.d) * (u128::from(last.r) + 1);
            if last.d == d && run_end == u128::from(start) && last.r < u32::MAX {
                last.r += 1;
                continue;
            }
        }
        out.push(TimelineEntry { t: start, d, r: 0 });
    }
    out
}

/// `AdaptationSet@contentType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Video,
    Audio,
}

impl ContentType {
    fn as_str(self) -> &'static str {
        match self {
            ContentType::Video => "video",
            ContentType::Audio => "audio",
        }
    }
}

/// One rendition.
#[derive(Clone, Debug, PartialEq)]
pub struct Representation {
    pub id: String,
    /// Bits/s.
    pub bandwidth: u64,
    pub codecs: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// `"30"` or `"30000/1001"`.
    pub frame_rate: Option<String>,
    pub audio_sampling_rate: Option<u32>,
    pub audio_channels: Option<u16>,
    pub timescale: u32,
    /// Init segment URL template, e.g. `720p/init.mp4`.
    pub initialization: String,
    /// Media segment URL template, e.g. `720p/seg-$Number$.m4s`.
    pub media: String,
    pub start_number: u64,
    pub timeline: Vec<TimelineEntry>,
    pub presentation_time_offset: u64,
}

/// A set of switchable representations of one content type.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptationSet {
    pub id: u32,
    pub content_type: ContentType,
    /// e.g. `video/mp4`.
    pub mime_type: String,
    pub segment_alignment: bool,
    pub representations: Vec<Representation>,
}

/// A complete on-demand presentation (`type="static"`), single period.
#[derive(Clone, Debug, PartialEq)]
pub struct StaticMpd {
    pub duration_s: f64,
    pub min_buffer_time_s: f64,
    pub adaptation_sets: Vec<AdaptationSet>,
}

impl StaticMpd {
    /// The MPD as an XML document.
    pub fn render(&self) -> String {
        let mut x = static_mpd_start(self.duration_s, self.min_buffer_time_s);
        write_period(&mut x, "0", 0.0, &self.adaptation_sets, None);
        x.push_str("</MPD>\n");
        x
    }
}

/// The XML declaration and `MPD` start tag of an on-demand presentation.
fn static_mpd_start(duration_s: f64, min_buffer_time_s: f64) -> String {
    let mut x = String::from(XML_DECLARATION);
    let _ = writeln!(
        x,
        "<MPD xmlns=\"{MPD_NAMESPACE}\" profiles=\"{PROFILE}\" type=\"static\" \
         mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
        xs_duration(duration_s),
        xs_duration(min_buffer_time_s)
    );
    x
}

/// One `Period` element; `start_s` is seconds from the presentation start.
/// `chunked`: low-latency live, where segments may be fetched while they are being written
/// (`availabilityTimeOffset` seconds before they are complete).
fn write_period(
    x: &mut String,
    id: &str,
    start_s: f64,
    adaptation_sets: &[AdaptationSet],
    chunked: Option<f64>,
) {
    let _ = writeln!(
        x,
        "  <Period id=\"{}\" start=\"{}\">",
        esc(id),
        xs_duration(start_s)
    );
    for set in adaptation_sets {
        let _ = write!(
            x,
            "    <AdaptationSet id=\"{}\" contentType=\"{}\" mimeType=\"{}\"",
            set.id,
            set.content_type.as_str(),
            esc(&set.mime_type)
        );
        if set.segment_alignment {
            x.push_str(" segmentAlignment=\"true\"");
        }
        // Every CMAF segment starts with a sync sample.
        x.push_str(" startWithSAP=\"1\">\n");
        for rep in &set.representations {
            write_representation(x, rep, chunked);
        }
        x.push_str("    </AdaptationSet>\n");
    }
    x.push_str("  </Period>\n");
}

fn write_representation(x: &mut String, rep: &Representation, chunked: Option<f64>) {
    let _ = write!(
        x,
        "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\"",
        esc(&rep.id),
        rep.bandwidth,
        esc(&rep.codecs)
    );
    if let Some(w) = rep.width {
        let _ = write!(x, " width=\"{w}\"");
    }
    if let Some(h) = rep.height {
        let _ = write!(x, " height=\"{h}\"");
    }
    if let Some(f) = &rep.frame_rate {
        let _ = write!(x, " frameRate=\"{}\"", esc(f));
    }
    if let Some(r) = rep.audio_sampling_rate {
        let _ = write!(x, " audioSamplingRate=\"{r}\"");
    }
    x.push_str(">\n");
    // Schema order: AudioChannelConfiguration precedes SegmentTemplate.
    if let Some(ch) = rep.audio_channels {
        let _ = writeln!(
            x,
            "        <AudioChannelConfiguration schemeIdUri=\"{AUDIO_CHANNEL_SCHEME}\" value=\"{ch}\"/>"
        );
    }
    let _ = write!(
        x,
        "        <SegmentTemplate timescale=\"{}\" initialization=\"{}\" media=\"{}\" startNumber=\"{}\"",
        rep.timescale,
        esc(&rep.initialization),
        esc(&rep.media),
        rep.start_number
    );
    if rep.presentation_time_offset != 0 {
        let _ = write!(
            x,
            " presentationTimeOffset=\"{}\"",
            rep.presentation_time_offset
        );
    }
    if let Some(offset) = chunked {
        let _ = write!(
            x,
            " availabilityTimeOffset=\"{}\" availabilityTimeComplete=\"false\"",
            seconds_attr(offset)
        );
        // Live segments of one length: players compute each segment's number and time from
        // the clock (and can ask for the one being written), and the MPD stays the same size
        // however long the session runs.
        if let Some(d) = constant_duration(&rep.timeline) {
            let _ = write!(x, " duration=\"{d}\"/>\n      </Representation>\n");
            return;
        }
    }
    x.push_str(">\n          <SegmentTimeline>\n");
    let mut expected = None;
    for s in &rep.timeline {
        // @t is only needed where the timeline does not continue from the previous entry.
        x.push_str("            <S");
        if expected != Some(u128::from(s.t)) {
            let _ = write!(x, " t=\"{}\"", s.t);
        }
        let _ = write!(x, " d=\"{}\"", s.d);
        if s.r > 0 {
            let _ = write!(x, " r=\"{}\"", s.r);
        }
        x.push_str("/>\n");
        expected = Some(u128::from(s.t) + u128::from(s.d) * (u128::from(s.r) + 1));
    }
    x.push_str(
        "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n",
    );
}

/// The one segment duration of a timeline whose segments are all that long, the first allowed to
/// be up to 1% shorter (an encoder's priming samples); `None` when a `SegmentTimeline` is
/// needed to say where segments are.
pub fn constant_duration(timeline: &[TimelineEntry]) -> Option<u64> {
    let (first, rest) = timeline.split_first()?;
    match rest {
        [] => Some(first.d),
        [run]
            if first.r == 0
                && first.d <= run.d
                && (run.d - first.d) * 100 <= run.d
                && u128::from(run.t) == u128::from(first.t) + u128::from(first.d) =>
        {
            Some(run.d)
        }
        _ => None,
    }
    .filter(|&d| d > 0)
}

/// Seconds as a plain `xs:double` with at most three decimals: `1.5`, `2`.
fn seconds_attr(s: f64) -> String {
    let s = format!("{:.3}", if s.is_finite() { s.max(0.0) } else { 0.0 });
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `xs:duration` in seconds with millisecond precision, e.g. `PT20.000S`.
fn xs_duration(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.max(0.0)
    } else {
        0.0
    };
    format!("PT{s:.3}S")
}

/// Escapes an XML attribute value.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: u64, d: u64, r: u32) -> TimelineEntry {
        TimelineEntry { t, d, r }
    }

    #[test]
    fn timeline_compression() {
        assert_eq!(compress_timeline(&[]), vec![]);
        assert_eq!(
            compress_timeline(&[(0, 4000), (4000, 4000), (8000, 4000), (12000, 2500)]),
            vec![e(0, 4000, 2), e(12000, 2500, 0)]
        );
        // Equal durations separated by a different one are separate runs.
        assert_eq!(
            compress_timeline(&[(0, 10), (10, 20), (30, 10)]),
            vec![e(0, 10, 0), e(10, 20, 0), e(30, 10, 0)]
        );
        // A gap breaks a run even with equal durations.
        assert_eq!(
            compress_timeline(&[(100, 10), (110, 10), (125, 10), (135, 10)]),
            vec![e(100, 10, 1), e(125, 10, 1)]
        );
    }

    #[test]
    fn xs_durations_and_escaping() {
        assert_eq!(xs_duration(20.0), "PT20.000S");
        assert_eq!(xs_duration(125.4567), "PT125.457S");
        assert_eq!(xs_duration(f64::NAN), "PT0.000S");
        assert_eq!(esc(r#"a&b<c>"d'"#), "a&amp;b&lt;c&gt;&quot;d&apos;");
    }

    #[test]
    fn renders_video_and_audio() {
        let video = Representation {
            id: "720p".into(),
            bandwidth: 2_800_000,
            codecs: "avc1.64001f".into(),
            width: Some(1280),
            height: Some(720),
            frame_rate: Some("30000/1001".into()),
            audio_sampling_rate: None,
            audio_channels: None,
            timescale: 15360,
            initialization: "720p/init.mp4".into(),
            media: "720p/seg-$Number$.m4s".into(),
            start_number: 1,
            timeline: compress_timeline(&[(0, 61440), (61440, 61440), (122880, 30720)]),
            presentation_time_offset: 0,
        };
        let audio = Representation {
            id: "audio".into(),
            bandwidth: 128_000,
            codecs: "mp4a.40.2".into(),
            width: None,
            height: None,
            frame_rate: None,
            audio_sampling_rate: Some(48000),
            audio_channels: Some(2),
            timescale: 48000,
            initialization: "audio/init.mp4".into(),
            media: "audio/seg-$Number$.m4s".into(),
            start_number: 1,
            timeline: vec![e(1024, 192_512, 1), e(500_000, 24_576, 0)],
            presentation_time_offset: 1024,
        };
        let mpd = StaticMpd {
            duration_s: 10.0,
            min_buffer_time_s: 2.0,
            adaptation_sets: vec![
                AdaptationSet {
                    id: 0,
                    content_type: ContentType::Video,
                    mime_type: "video/mp4".into(),
                    segment_alignment: true,
                    representations: vec![video],
                },
                AdaptationSet {
                    id: 1,
                    content_type: ContentType::Audio,
                    mime_type: "audio/mp4".into(),
                    segment_alignment: false,
                    representations: vec![audio],
                },
            ],
        };
        let expected = r#"<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="urn:mpeg:dash:profile:isoff-live:2011" type="static" mediaPresentationDuration="PT10.000S" minBufferTime="PT2.000S">
  <Period id="0" start="PT0.000S">
    <AdaptationSet id="0" contentType="video" mimeType="video/mp4" segmentAlignment="true" startWithSAP="1">
      <Representation id="720p" bandwidth="2800000" codecs="avc1.64001f" width="1280" height="720" frameRate="30000/1001">
        <SegmentTemplate timescale="15360" initialization="720p/init.mp4" media="720p/seg-$Number$.m4s" startNumber="1">
          <SegmentTimeline>
            <S t="0" d="61440" r="1"/>
            <S d="30720"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id="1" contentType="audio" mimeType="audio/mp4" startWithSAP="1">
      <Representation id="audio" bandwidth="128000" codecs="mp4a.40.2" audioSamplingRate="48000">
        <AudioChannelConfiguration schemeIdUri="urn:mpeg:dash:23003:3:audio_channel_configuration:2011" value="2"/>
        <SegmentTemplate timescale="48000" initialization="audio/init.mp4" media="audio/seg-$Number$.m4s" startNumber="1" presentationTimeOffset="1024">
          <SegmentTimeline>
            <S t="1024" d="192512" r="1"/>
            <S t="500000" d="24576"/>
          </SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;
        assert_eq!(mpd.render(), expected);
    }

    #[test]
    fn attribute_values_are_escaped() {
        let rep = Representation {
            id: "a&b".into(),
            bandwidth: 1,
            codecs: "x\"y".into(),
            width: None,
            height: None,
            frame_rate: None,
            audio_sampling_rate: None,
            audio_channels: None,
            timescale: 1,
            initialization: "<i>".into(),
            media: "m".into(),
            start_number: 0,
            timeline: vec![],
            presentation_time_offset: 0,
        };
        let mut x = String::new();
        write_representation(&mut x, &rep, None);
        assert!(x.starts_with(
            "      <Representation id=\"a&amp;b\" bandwidth=\"1\" codecs=\"x&quot;y\">\n"
        ));
        assert!(x.contains("initialization=\"&lt;i&gt;\""));
    }
}
