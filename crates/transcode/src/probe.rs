//! Probing a source with ffprobe.

use std::path::Path;

use serde::Deserialize;

use crate::{run, Error, Input, Result};

mod streams;
pub use streams::{parse_streams, StreamsProbe, VideoStream};

/// What the pipeline needs to know about a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub format: String,
    pub duration_s: f64,
    /// Length of the video stream alone (the file may run longer with its audio).
    pub video_duration_s: f64,
    /// How long after the file's first timestamp the video starts. ffmpeg counts time from
    /// that first timestamp, often an audio codec's priming a few ms early.
    pub video_start_s: f64,
    /// Coded size of the first video stream.
    pub width: u32,
    pub height: u32,
    /// Display rotation from metadata, degrees.
    pub rotation: i32,
    pub frame_rate: f64,
    /// The frame rate as ffprobe's rational (`30000/1001`), for exact `fps` filters.
    pub frame_rate_ratio: (u32, u32),
    pub video_codec: String,
    pub has_audio: bool,
    /// Sample aspect ratio (`64:45` for 16:9 PAL); `(1, 1)` when absent or invalid.
    pub sar: (u32, u32),
    /// Stored as fields (`tt`, `bb`, `tb`, `bt`), so it must be deinterlaced.
    pub interlaced: bool,
    /// Decoder pixel format, e.g. `yuv420p10le`.
    pub pix_fmt: String,
    /// Transfer characteristic (`bt709`, `smpte2084` for PQ, `arib-std-b67` for HLG).
    pub color_transfer: String,
    /// Index among the audio streams (for `-map 0:a:N`) of the default track, else the first.
    pub audio_index: usize,
}

impl Probe {
    /// HDR transfer (PQ or HLG): needs tone-mapping to SDR BT.709.
    pub fn is_hdr(&self) -> bool {
        matches!(self.color_transfer.as_str(), "smpte2084" | "arib-std-b67")
    }
}

#[derive(Deserialize)]
struct Out {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    format_name: Option<String>,
    duration: Option<String>,
    start_time: Option<String>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
    codec_name: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    avg_frame_rate: Option<String>,
    r_frame_rate: Option<String>,
    duration: Option<String>,
    start_time: Option<String>,
    sample_aspect_ratio: Option<String>,
    field_order: Option<String>,
    pix_fmt: Option<String>,
    color_transfer: Option<String>,
    #[serde(default)]
    disposition: Disposition,
    #[serde(default)]
    tags: Tags,
    #[serde(default)]
    side_data_list: Vec<SideData>,
    /// 1 when CEA-608/708 captions ride in the video.
    #[serde(default)]
    closed_captions: u8,
}

#[derive(Deserialize, Default)]
struct Disposition {
    #[serde(default)]
    attached_pic: u8,
    #[serde(default)]
    default: u8,
}

#[derive(Deserialize, Default)]
struct Tags {
    rotate: Option<String>,
    /// Matroska's per-stream length, `HH:MM:SS.nnnnnnnnn`.
    #[serde(rename = "DURATION")]
    duration: Option<String>,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

/// Probes `path`. A file ffprobe cannot read, or one without a video stream or duration, is
/// [`Error::Rejected`] with a reason for the uploader.
pub async fn probe(ffprobe: &Path, input: &Input) -> Result<Probe> {
    let mut args: Vec<String> = [
        "-v",
        "error",
        "-show_format",
        "-show_streams",
        "-of",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(input.args());
    let out = match run(ffprobe, &args).await {
        Ok(out) => out,
        Err(Error::Failed { stderr, .. }) => {
            return Err(Error::Rejected(rejection(&stderr)));
        }
        Err(e) => return Err(e),
    };
    parse(&out)
}

/// ffprobe's complaint, in words for the uploader and without our file names.
fn rejection(stderr: &str) -> String {
    if let Some(line) = stderr.lines().find(|l| l.contains("not on whitelist")) {
        let fmt = line
            .split_once("[")
            .and_then(|(_, r)| r.split_once(" @"))
            .map(|(f, _)| f)
            .unwrap_or("unknown");
        return format!("not a video: the file is in a format that is not accepted ({fmt})");
    }
    let last = stderr.lines().last().unwrap_or("unreadable");
    // "<url>: Invalid data found when processing input" -> keep the reason only.
    let reason = last.rsplit_once(": ").map_or(last, |(_, r)| r);
    let detail = stderr
        .lines()
        .find_map(|l| l.split_once("] ").map(|(_, m)| m.to_string()))
        .map(|m| format!(" ({m})"))
        .unwrap_or_default();
    format!("not a video file we can read: {reason}{detail}")
}

fn parse(json: &[u8]) -> Result<Probe> {
    let out: Out = serde_json::from_slice(json).map_err(|e| Error::BadProbe(e.to_string()))?;
    let format = out.format.as_ref();
    let video = out
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video") && s.disposition.attached_pic == 0)
        .ok_or_else(|| Error::Rejected("not a video: the file has no video stream".into()))?;
    let (Some(width), Some(height)) = (video.width, video.height) else {
        return Err(Error::Rejected(
            "not a video: the video stream has no picture size".into(),
        ));
    };
    if width == 0 || height == 0 {
        return Err(Error::Rejected(
            "not a video: the picture size is zero".into(),
        ));
    }
    let duration_s = format
        .and_then(|f| f.duration.as_deref())
        .or(video.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite())
        .unwrap_or(0.0);
    if duration_s <= 0.0 {
        return Err(Error::Rejected("the video has zero duration".into()));
    }
    let video_duration_s = video
        .duration
        .as_deref()
        .and_then(|d| d.parse::<f64>().ok())
        .or_else(|| {
            // ffmpeg's Matroska muxer writes the end time, not the length, as DURATION.
            let end = video.tags.duration.as_deref().and_then(parse_clock)?;
            Some(
                end - video
                    .start_time
                    .as_deref()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(0.0)
                    .max(0.0),
            )
        })
        .filter(|d| d.is_finite() && *d > 0.0)
        .unwrap_or(duration_s);
    let seconds = |v: Option<&String>| {
        v.and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite())
    };
    let video_start_s = match (
        seconds(video.start_time.as_ref()),
        seconds(format.and_then(|f| f.start_time.as_ref())),
    ) {
        (Some(v), Some(f)) => (v - f).max(0.0),
        _ => 0.0,
    };
    let rotation = rotation(video);
    let frame_rate_ratio = nominal_rate(
        video.avg_frame_rate.as_deref().and_then(parse_ratio),
        video.r_frame_rate.as_deref().and_then(parse_ratio),
    );
    let frame_rate = f64::from(frame_rate_ratio.0) / f64::from(frame_rate_ratio.1);
    let sar = video
        .sample_aspect_ratio
        .as_deref()
        .and_then(|s| s.split_once(':'))
        .and_then(|(n, d)| Some((n.parse::<u32>().ok()?, d.parse::<u32>().ok()?)))
        .filter(|&(n, d)| n > 0 && d > 0 && n <= 100 * d && d <= 100 * n)
        .unwrap_or((1, 1));
    let interlaced = matches!(
        video.field_order.as_deref(),
        Some("tt" | "bb" | "tb" | "bt")
    );
    let audio: Vec<&Stream> = out
        .streams
        .iter()
        .filter(|s| s.codec_type.as_deref() == Some("audio"))
        .collect();
    let audio_index = audio
        .iter()
        .position(|s| s.disposition.default == 1)
        .unwrap_or(0);
    Ok(Probe {
        format: format
            .and_then(|f| f.format_name.clone())
            .unwrap_or_default(),
        duration_s,
        video_duration_s,
        video_start_s,
        width,
        height,
        rotation,
        frame_rate,
        frame_rate_ratio,
        video_codec: video.codec_name.clone().unwrap_or_default(),
        has_audio: !audio.is_empty(),
        sar,
        interlaced,
        pix_fmt: video.pix_fmt.clone().unwrap_or_default(),
        color_transfer: video.color_transfer.clone().unwrap_or_default(),
        audio_index,
    })
}

/// Frame rates cameras, phones and editors use, as exact rationals.
const STANDARD_RATES: [(u32, u32); 12] = [
    (24000, 1001),
    (24, 1),
    (25, 1),
    (30000, 1001),
    (30, 1),
    (48, 1),
    (50, 1),
    (60000, 1001),
    (60, 1),
    (100, 1),
    (120000, 1001),
    (120, 1),
];

/// The source's frame rate. The average rate wins when it is a standard rate (within 0.5%):
/// interlaced streams often report their field rate as `r_frame_rate` (50 for 25i). A variable
/// frame rate source has an odd average (27.4), so its nominal `r_frame_rate` (30) wins, unless
/// that is a container timebase (Matroska's 1000). 30 fps when neither is usable.
fn nominal_rate(avg: Option<(u32, u32)>, r: Option<(u32, u32)>) -> (u32, u32) {
    let value = |(n, d): (u32, u32)| f64::from(n) / f64::from(d);
    let error = |rate: (u32, u32), s: (u32, u32)| (value(rate) / value(s) - 1.0).abs();
    let standard = |rate: (u32, u32)| {
        STANDARD_RATES
            .iter()
            .copied()
            .filter(|&s| error(rate, s) < 0.005)
            .min_by(|&a, &b| error(rate, a).total_cmp(&error(rate, b)))
    };
    let sane = |rate: &(u32, u32)| (1.0..=240.0).contains(&value(*rate));
    avg.and_then(standard)
        .or_else(|| r.and_then(standard))
        .or(r.filter(sane))
        .or(avg.filter(sane))
        .unwrap_or((30, 1))
}

/// `00:00:02.000000000` as seconds.
fn parse_clock(s: &str) -> Option<f64> {
    let mut secs = 0.0;
    for part in s.split(':') {
        secs = secs * 60.0 + part.parse::<f64>().ok()?;
    }
    Some(secs)
}

/// `30000/1001` or `25` as a positive rational.
/// Display rotation from the display matrix, or the old `rotate` tag.
fn rotation(video: &Stream) -> i32 {
    video
        .side_data_list
        .iter()
        .find_map(|s| s.rotation)
        .filter(|r| r.is_finite())
        .map(|r| r.round().clamp(-360.0, 360.0) as i32)
        .or_else(|| video.tags.rotate.as_deref().and_then(|r| r.parse().ok()))
        .unwrap_or(0)
}

fn parse_ratio(r: &str) -> Option<(u32, u32)> {
    let (n, d) = match r.split_once('/') {
        Some((n, d)) => (n.parse::<u32>().ok()?, d.parse::<u32>().ok()?),
        None => (r.parse::<u32>().ok()?, 1),
    };
    (n > 0 && d > 0).then_some((n, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_video_with_audio_and_rotation() {
        let j = br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":1280,"height":720,
             "avg_frame_rate":"30000/1001","r_frame_rate":"30000/1001",
             "side_data_list":[{"side_data_type":"Display Matrix","rotation":-90}]},
            {"codec_type":"audio","codec_name":"aac"}],
            "format":{"format_name":"mov,mp4,m4a,3gp,3g2,mj2","duration":"20.000000"}}"#;
        let p = parse(j).unwrap();
        assert_eq!((p.width, p.height, p.rotation), (1280, 720, -90));
        assert!((p.frame_rate - 29.97).abs() < 0.01);
        assert!(p.has_audio);
        assert_eq!(p.duration_s, 20.0);
    }

    #[test]
    fn rotate_tag_and_cover_art_are_handled() {
        let j = br#"{"streams":[
            {"codec_type":"video","codec_name":"mjpeg","width":600,"height":600,"disposition":{"attached_pic":1}},
            {"codec_type":"video","codec_name":"h264","width":640,"height":480,"avg_frame_rate":"0/0","r_frame_rate":"25/1","tags":{"rotate":"90"}}],
            "format":{"duration":"3.5"}}"#;
        let p = parse(j).unwrap();
        assert_eq!(
            (p.width, p.rotation, p.frame_rate, p.has_audio),
            (640, 90, 25.0, false)
        );
    }

    #[test]
    fn camera_fields_are_read() {
        // DVD-style PAL: anamorphic, interlaced, two audio tracks with the second the default,
        // AAC priming making the audio start 23 ms before the video.
        let j = br#"{"streams":[
            {"codec_type":"video","codec_name":"mpeg2video","width":720,"height":576,
             "sample_aspect_ratio":"64:45","field_order":"tt","pix_fmt":"yuv420p",
             "avg_frame_rate":"25/1","r_frame_rate":"50/1","start_time":"10.000000",
             "tags":{"DURATION":"00:00:12.000000000"}},
            {"codec_type":"audio","disposition":{"default":0}},
            {"codec_type":"audio","disposition":{"default":1}}],
            "format":{"duration":"12.0","start_time":"9.977000"}}"#;
        let p = parse(j).unwrap();
        assert_eq!(p.sar, (64, 45));
        assert!(p.interlaced);
        assert_eq!(
            p.frame_rate_ratio,
            (25, 1),
            "field rate 50 is not the frame rate"
        );
        assert_eq!(p.audio_index, 1);
        assert!(
            (p.video_start_s - 0.023).abs() < 1e-9,
            "{}",
            p.video_start_s
        );
        // ffmpeg's Matroska DURATION is the end time: 12 s end - 10 s start.
        assert!(
            (p.video_duration_s - 2.0).abs() < 1e-9,
            "{}",
            p.video_duration_s
        );
        assert!(!p.is_hdr());

        let hdr = br#"{"streams":[{"codec_type":"video","width":3840,"height":2160,
            "sample_aspect_ratio":"0:1","field_order":"progressive","pix_fmt":"yuv420p10le",
            "color_transfer":"smpte2084","duration":"2.5"}],"format":{"duration":"3"}}"#;
        let p = parse(hdr).unwrap();
        assert_eq!((p.sar, p.interlaced, p.audio_index), ((1, 1), false, 0));
        assert!(p.is_hdr());
        assert_eq!(p.video_duration_s, 2.5);
        assert_eq!(p.pix_fmt, "yuv420p10le");
    }

    #[test]
    fn nominal_frame_rate() {
        let n = |avg: Option<(u32, u32)>, r: Option<(u32, u32)>| nominal_rate(avg, r);
        assert_eq!(n(Some((30, 1)), Some((30, 1))), (30, 1));
        assert_eq!(n(Some((24000, 1001)), Some((24000, 1001))), (24000, 1001));
        // Rounded averages snap to the nearest standard rate, not the first within 0.5%.
        assert_eq!(n(Some((2997, 100)), None), (30000, 1001));
        assert_eq!(n(Some((5994, 100)), Some((60, 1))), (60000, 1001));
        // VFR: odd average, nominal r_frame_rate.
        assert_eq!(n(Some((2571, 100)), Some((30, 1))), (30, 1));
        // Matroska timebase as r_frame_rate: the average it is.
        assert_eq!(n(Some((2743, 100)), Some((1000, 1))), (2743, 100));
        assert_eq!(n(None, None), (30, 1));
        assert_eq!(parse_ratio("0/0"), None);
        assert_eq!(parse_ratio("25"), Some((25, 1)));
    }

    #[test]
    fn ffprobe_complaints_become_sentences_without_paths() {
        let hls = "[hls @ 0x55] Format not on whitelist 'mov,mp4'\nconcat:/srv/data/uploads/x/part-00001: Invalid argument";
        assert_eq!(
            rejection(hls),
            "not a video: the file is in a format that is not accepted (hls)"
        );
        let cut = "[mov,mp4,m4a,3gp,3g2,mj2 @ 0x56] moov atom not found\nfile:/srv/x: Invalid data found when processing input";
        let msg = rejection(cut);
        assert_eq!(msg, "not a video file we can read: Invalid data found when processing input (moov atom not found)");
        assert!(!msg.contains("/srv"));
    }

    #[test]
    fn rejections_say_why() {
        let audio_only = br#"{"streams":[{"codec_type":"audio"}],"format":{"duration":"3"}}"#;
        assert!(
            matches!(parse(audio_only), Err(Error::Rejected(m)) if m.contains("no video stream"))
        );
        let zero = br#"{"streams":[{"codec_type":"video","width":2,"height":2}],"format":{"duration":"0"}}"#;
        assert!(matches!(parse(zero), Err(Error::Rejected(m)) if m.contains("zero duration")));
        assert!(matches!(parse(b"{}"), Err(Error::Rejected(_))));
        assert!(matches!(parse(b"nonsense"), Err(Error::BadProbe(_))));
    }
}
