//! The streams of a live publisher's first bytes (`ffprobe -show_streams` on a pipe): no
//! duration, and perhaps no picture size yet. The same typed parser as for files.

use super::{parse_ratio, rotation, Out};
use crate::{Error, Result};

/// The first video stream, as far as ffprobe could tell.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoStream {
    pub codec: String,
    /// 0 while unknown (more data may tell).
    pub width: u32,
    pub height: u32,
    pub rotation: i32,
    /// Frames per second, when stated and plausible (at most 240).
    pub frame_rate: Option<f64>,
    /// CEA-608/708 captions in the video.
    pub closed_captions: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamsProbe {
    pub video: Option<VideoStream>,
    /// The first audio stream's codec.
    pub audio_codec: Option<String>,
    /// How many streams there are, of any kind.
    pub streams: usize,
}

/// Parses `-show_streams -of json`. Malformed output is [`Error::BadProbe`].
pub fn parse_streams(json: &[u8]) -> Result<StreamsProbe> {
    let out: Out = serde_json::from_slice(json).map_err(|e| Error::BadProbe(e.to_string()))?;
    let kind = |k: &str| {
        out.streams
            .iter()
            .find(move |s| s.codec_type.as_deref() == Some(k))
    };
    let video = kind("video").map(|v| {
        let rate = |r: &Option<String>| {
            r.as_deref()
                .and_then(parse_ratio)
                .map(|(n, d)| f64::from(n) / f64::from(d))
                .filter(|r| r.is_finite() && *r > 0.0 && *r <= 240.0)
        };
        VideoStream {
            codec: v.codec_name.clone().unwrap_or_else(|| "unknown".into()),
            width: v.width.unwrap_or(0),
            height: v.height.unwrap_or(0),
            rotation: rotation(v),
            frame_rate: rate(&v.avg_frame_rate).or_else(|| rate(&v.r_frame_rate)),
            closed_captions: v.closed_captions == 1,
        }
    });
    Ok(StreamsProbe {
        video,
        audio_codec: kind("audio").map(|a| a.codec_name.clone().unwrap_or_default()),
        streams: out.streams.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publishers_head() {
        let p = parse_streams(
            br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":640,"height":360,
             "avg_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}],
             "closed_captions":1},
            {"codec_type":"audio","codec_name":"aac"}]}"#,
        )
        .unwrap();
        let v = p.video.unwrap();
        assert_eq!((v.width, v.height, v.rotation), (640, 360, -90));
        assert!((v.frame_rate.unwrap() - 29.97).abs() < 0.01);
        assert!(v.closed_captions);
        assert_eq!(p.audio_codec.as_deref(), Some("aac"));
        assert_eq!(p.streams, 2);
    }

    #[test]
    fn what_is_not_known_yet_or_not_plausible_is_none() {
        let p = parse_streams(
            br#"{"streams":[{"codec_type":"video","avg_frame_rate":"0/0",
            "r_frame_rate":"1000/1"}]}"#,
        )
        .unwrap();
        let v = p.video.unwrap();
        assert_eq!((v.width, v.height, v.frame_rate), (0, 0, None));
        assert_eq!(v.codec, "unknown");
        assert_eq!(parse_streams(b"{}").unwrap().streams, 0);
        assert!(parse_streams(b"\xff").is_err());
        assert!(parse_streams(br#"{"streams":[{"width":-1}]}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = parse_streams(&bytes);
        }
    }
}
