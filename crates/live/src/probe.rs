//! What a publisher sends, as ffprobe sees the first bytes of it.
//!
//! Audio-only publishing is refused, here, before a session or its recording exists: the live
//! ladder, the packager's master playlists and the recording all assume a video track, and a
//! stream without one has nothing to play in the web player. Supporting it would be a feature of
//! its own (an audio-only ladder and master); refusing it with a reason the streamer can read in
//! the API is honest, and leaves no failed video behind.

use std::path::Path;
use std::time::Duration;

use oxcast_ingest::Container;
use oxcast_media::ladder::SourceVideo;
use tokio::io::AsyncWriteExt;

/// What the ladder needs to know about a published stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SourceProbe {
    pub source: SourceVideo,
    pub frame_rate: f64,
    pub has_audio: bool,
    /// ffprobe's codec names, for the dashboard: `h264`, `aac`.
    pub video_codec: String,
    pub audio_codec: Option<String>,
    /// ffprobe saw CEA-608/708 captions in the video.
    pub closed_captions: bool,
}

/// What ffprobe made of a stream's first bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Probed {
    /// A video track (and maybe audio): publishable.
    Video(SourceProbe),
    /// Tracks, none of them video.
    NoVideo { audio: bool },
    /// Nothing ffprobe could read.
    Unreadable,
}

impl Probed {
    /// Why a publisher whose stream probed like this cannot go live, for the stream's status.
    pub(crate) fn refusal(&self, received: usize, waited: Duration) -> String {
        match self {
            Probed::Video(_) => "the stream has video".into(),
            Probed::NoVideo { audio: true } => "the published stream has audio but no video; \
                 live streams need a video track (audio-only publishing is not supported)"
                .into(),
            Probed::NoVideo { audio: false } => "the published stream has no video track".into(),
            Probed::Unreadable if received == 0 => format!(
                "no media arrived within {} s of the publish",
                waited.as_secs()
            ),
            Probed::Unreadable => format!(
                "could not read the published stream ({received} bytes received): is it H.264 \
                 video in FLV (RTMP) or MPEG-TS (SRT)?"
            ),
        }
    }
}

/// Runs ffprobe on the head of a stream.
pub(crate) async fn probe_source(ffprobe: &Path, container: Container, head: &[u8]) -> Probed {
    let fmt = match container {
        Container::Flv => "flv",
        Container::MpegTs => "mpegts",
    };
    // Through the transcode crate's builder: killed with us, even by SIGKILL.
    let child = oxcast_transcode::command(ffprobe)
        .args([
            "-v",
            "error",
            "-show_streams",
            "-of",
            "json",
            "-protocol_whitelist",
            "pipe",
            "-f",
            fmt,
            "-i",
            "pipe:0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Probed::Unreadable;
    };
    let Some(mut stdin) = child.stdin.take() else {
        return Probed::Unreadable;
    };
    let data = head.to_vec();
    let feed = tokio::spawn(async move {
        let _ = stdin.write_all(&data).await;
    });
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output()).await;
    let _ = feed.await;
    match out {
        Ok(Ok(out)) => parse_probe(&out.stdout),
        _ => Probed::Unreadable,
    }
}

/// Reads ffprobe's `-show_streams -of json` output (the transcode crate's typed parser). Pure.
pub(crate) fn parse_probe(json: &[u8]) -> Probed {
    let Ok(p) = oxcast_transcode::parse_streams(json) else {
        return Probed::Unreadable;
    };
    let has_audio = p.audio_codec.is_some();
    let Some(video) = p.video else {
        return if p.streams == 0 {
            Probed::Unreadable
        } else {
            Probed::NoVideo { audio: has_audio }
        };
    };
    if video.width == 0 || video.height == 0 {
        // A video track whose picture size is not known yet: more data may tell.
        return Probed::Unreadable;
    }
    Probed::Video(SourceProbe {
        source: SourceVideo {
            width: video.width,
            height: video.height,
            rotation: video.rotation,
        },
        frame_rate: video.frame_rate.unwrap_or(30.0),
        has_audio,
        video_codec: video.codec,
        audio_codec: p.audio_codec,
        closed_captions: video.closed_captions,
    })
}

/// Why a probed stream is over this server's limits (`limits.max_width`/`max_height`, the
/// same as for uploads), if it is.
pub(crate) fn over_limits(p: &SourceProbe, l: &oxcast_base::config::Limits) -> Option<String> {
    let (w, h) = (p.source.width, p.source.height);
    (w > l.max_width || h > l.max_height).then(|| {
        format!(
            "the published video is {w}x{h}; this server accepts at most {}x{} \
             (limits.max_width, limits.max_height): lower the output resolution",
            l.max_width, l.max_height
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_with_audio() {
        let json = br#"{"streams":[
            {"codec_type":"video","codec_name":"h264","width":640,"height":360,
             "avg_frame_rate":"30000/1001","side_data_list":[{"rotation":-90}]},
            {"codec_type":"audio","codec_name":"aac"}]}"#;
        let Probed::Video(p) = parse_probe(json) else {
            panic!("video expected")
        };
        assert_eq!((p.source.width, p.source.height), (640, 360));
        assert_eq!(p.source.rotation, -90);
        assert!((p.frame_rate - 29.97).abs() < 0.01);
        assert!(p.has_audio);
        assert_eq!(
            (p.video_codec.as_str(), p.audio_codec.as_deref()),
            ("h264", Some("aac"))
        );
        assert!(!p.closed_captions);
        let json = br#"{"streams":[{"codec_type":"video","width":2,"height":2,
            "closed_captions":1}]}"#;
        let Probed::Video(p) = parse_probe(json) else {
            panic!("video expected")
        };
        assert!(p.closed_captions, "CEA-608 in the video is noticed");
    }

    #[test]
    fn frame_rate_falls_back() {
        let json = br#"{"streams":[{"codec_type":"video","width":2,"height":2,
            "avg_frame_rate":"0/0","r_frame_rate":"25/1"}]}"#;
        let Probed::Video(p) = parse_probe(json) else {
            panic!("video expected")
        };
        assert_eq!(p.frame_rate, 25.0);
        assert!(!p.has_audio);
        assert_eq!((p.video_codec.as_str(), p.audio_codec), ("unknown", None));
        let json = br#"{"streams":[{"codec_type":"video","width":2,"height":2,
            "avg_frame_rate":"1000/1"}]}"#;
        let Probed::Video(p) = parse_probe(json) else {
            panic!("video expected")
        };
        assert_eq!(p.frame_rate, 30.0, "absurd rates are not trusted");
    }

    #[test]
    fn audio_only_is_told_apart_from_garbage() {
        let audio = br#"{"streams":[{"codec_type":"audio","codec_name":"aac"}]}"#;
        assert_eq!(parse_probe(audio), Probed::NoVideo { audio: true });
        let data = br#"{"streams":[{"codec_type":"data"}]}"#;
        assert_eq!(parse_probe(data), Probed::NoVideo { audio: false });
        assert_eq!(parse_probe(br#"{"streams":[]}"#), Probed::Unreadable);
        assert_eq!(parse_probe(b"{}"), Probed::Unreadable);
        assert_eq!(parse_probe(b""), Probed::Unreadable);
        assert_eq!(parse_probe(b"\xff garbage"), Probed::Unreadable);
        let sizeless = br#"{"streams":[{"codec_type":"video","width":0,"height":0}]}"#;
        assert_eq!(parse_probe(sizeless), Probed::Unreadable);
    }

    #[test]
    fn resolution_over_the_limits_is_refused_with_both_sizes() {
        let json = br#"{"streams":[{"codec_type":"video","width":3840,"height":2160}]}"#;
        let Probed::Video(p) = parse_probe(json) else {
            panic!("video expected")
        };
        let mut l = oxcast_base::config::Limits::default();
        assert_eq!(over_limits(&p, &l), None);
        l.max_width = 1920;
        l.max_height = 1080;
        let why = over_limits(&p, &l).unwrap();
        assert!(
            why.contains("3840x2160") && why.contains("1920x1080"),
            "{why}"
        );
        l.max_width = 3840;
        l.max_height = 2160;
        assert_eq!(over_limits(&p, &l), None, "exactly at the limit is fine");
    }

    #[test]
    fn refusal_reasons_say_what_to_fix() {
        let wait = Duration::from_secs(5);
        let audio = Probed::NoVideo { audio: true }.refusal(50_000, wait);
        assert!(audio.contains("audio-only"), "{audio}");
        assert_eq!(
            Probed::Unreadable.refusal(0, wait),
            "no media arrived within 5 s of the publish"
        );
        assert!(Probed::Unreadable
            .refusal(123, wait)
            .contains("123 bytes received"));
    }
}
