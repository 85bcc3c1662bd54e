//! RFC 8216 (HLS) playlist writers for fMP4 segments.
//!
//! [`MediaPlaylist`] covers VOD (and simple event) playlists; [`live`] renders Low-Latency HLS
//! live playlists (`EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL`, delta updates).
//! [`MasterPlaylist`] serves both (live variants usually leave `average_bandwidth` unset: it is
//! not known until the session ends).

use std::fmt::Write as _;

mod ladder;
pub mod live;

pub use ladder::{Ladder, LadderAudio, LadderVideo, AUDIO_GROUP};
pub use live::{LivePlaylist, LiveSegment, Part, RenditionReport};

/// `EXT-X-VERSION` written. `EXT-X-MAP` outside I-frames-only playlists needs at least 6
/// (RFC 8216 §7); 7 is the usual value for fMP4 (ffmpeg's hlsenc writes it too).
pub const VERSION: u32 = 7;

/// One media segment line (`#EXTINF` + URI).
#[derive(Clone, Debug, PartialEq)]
pub struct MediaSegment {
    pub uri: String,
    /// Seconds.
    pub duration: f64,
    /// Emit `#EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
}

/// `EXT-X-PLAYLIST-TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaylistType {
    Vod,
    Event,
}

impl PlaylistType {
    fn as_str(self) -> &'static str {
        match self {
            PlaylistType::Vod => "VOD",
            PlaylistType::Event => "EVENT",
        }
    }
}

/// A media playlist for one rendition.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaPlaylist {
    /// Whole seconds, at least every segment's duration (see [`target_duration`]).
    pub target_duration: u64,
    pub media_sequence: u64,
    pub playlist_type: Option<PlaylistType>,
    pub independent_segments: bool,
    /// URI of the init segment (`EXT-X-MAP`).
    pub map_uri: String,
    pub segments: Vec<MediaSegment>,
    /// Emit `#EXT-X-ENDLIST`.
    pub ended: bool,
}

/// Target duration for segments: the largest duration rounded up to whole seconds (at least 1).
///
/// RFC 8216 §4.3.3.1 only requires each duration *rounded to nearest* to be at most the target;
/// rounding up is stricter and is what players that treat the target as a hard limit expect. A
/// millisecond of slack keeps float noise (4.0000001) from bumping the target to 5.
pub fn target_duration(segments: &[MediaSegment]) -> u64 {
    segments
        .iter()
        .map(|s| (s.duration - 0.001).ceil().max(0.0) as u64)
        .max()
        .unwrap_or(0)
        .max(1)
}

impl MediaPlaylist {
    /// A complete VOD playlist: computed target duration, media sequence 0, `VOD` type,
    /// independent segments and `EXT-X-ENDLIST`.
    pub fn vod(map_uri: impl Into<String>, segments: Vec<MediaSegment>) -> Self {
        Self {
            target_duration: target_duration(&segments),
            media_sequence: 0,
            playlist_type: Some(PlaylistType::Vod),
            independent_segments: true,
            map_uri: map_uri.into(),
            segments,
            ended: true,
        }
    }

    /// The playlist text, lines ending in `\n`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        for segment in &self.segments {
            write_segment(&mut out, segment);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    fn write_header(&self, out: &mut String) {
        out.push_str("#EXTM3U\n");
        let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if let Some(t) = self.playlist_type {
            let _ = writeln!(out, "#EXT-X-PLAYLIST-TYPE:{}", t.as_str());
        }
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let _ = writeln!(out, "#EXT-X-MAP:URI={}", quoted_uri(&self.map_uri));
    }
}

fn write_segment(out: &mut String, segment: &MediaSegment) {
    if segment.discontinuity {
        out.push_str("#EXT-X-DISCONTINUITY\n");
    }
    let _ = writeln!(out, "#EXTINF:{:.5},", segment.duration);
    out.push_str(&uri_line(&segment.uri));
    out.push('\n');
}

/// An `EXT-X-MEDIA` audio rendition.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioRendition {
    pub group_id: String,
    pub name: String,
    pub uri: String,
    pub default: bool,
    pub channels: Option<u16>,
    /// RFC 5646 tag, e.g. `en`.
    pub language: Option<String>,
    /// RFC 6381 codec of this rendition (e.g. `mp4a.40.2`), appended to the `CODECS` of
    /// variants that use its group.
    pub codecs: String,
}

/// An `EXT-X-STREAM-INF` video variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub uri: String,
    /// Peak bits/s, including the audio the variant plays with.
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    pub width: u32,
    pub height: u32,
    /// Video codec (RFC 6381); audio codecs are added from the audio group.
    pub codecs: String,
    pub frame_rate: Option<f64>,
    /// `GROUP-ID` of the audio renditions this variant plays with.
    pub audio_group: Option<String>,
    /// `CLOSED-CAPTIONS=NONE`: the video is known to carry no CEA-608/708 captions, so players
    /// need not probe segments for them.
    pub no_closed_captions: bool,
}

/// The master (multivariant) playlist.
#[derive(Clone, Debug, PartialEq)]
pub struct MasterPlaylist {
    pub independent_segments: bool,
    pub audio: Vec<AudioRendition>,
    pub variants: Vec<Variant>,
}

impl MasterPlaylist {
    /// The playlist text: audio renditions, then variants by bandwidth, highest first.
    pub fn render(&self) -> String {
        let mut out = String::from("#EXTM3U\n");
        let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
        if self.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        for a in &self.audio {
            let _ = write!(
                out,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID={},NAME={}",
                quoted(&a.group_id),
                quoted(&a.name)
            );
            if let Some(lang) = &a.language {
                let _ = write!(out, ",LANGUAGE={}", quoted(lang));
            }
            let _ = write!(
                out,
                ",DEFAULT={},AUTOSELECT=YES",
                if a.default { "YES" } else { "NO" }
            );
            if let Some(ch) = a.channels {
                let _ = write!(out, ",CHANNELS=\"{ch}\"");
            }
            let _ = writeln!(out, ",URI={}", quoted_uri(&a.uri));
        }
        let mut variants: Vec<&Variant> = self.variants.iter().collect();
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        for v in variants {
            let group: Vec<&AudioRendition> = match &v.audio_group {
                Some(g) => self.audio.iter().filter(|a| &a.group_id == g).collect(),
                None => Vec::new(),
            };
            let mut codecs = vec![v.codecs.as_str()];
            for a in &group {
                if !a.codecs.is_empty() && !codecs.contains(&a.codecs.as_str()) {
                    codecs.push(&a.codecs);
                }
            }
            let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", v.bandwidth);
            if let Some(avg) = v.average_bandwidth {
                let _ = write!(out, ",AVERAGE-BANDWIDTH={avg}");
            }
            let _ = write!(
                out,
                ",CODECS={},RESOLUTION={}x{}",
                quoted(&codecs.join(",")),
                v.width,
                v.height
            );
            if let Some(fps) = v.frame_rate {
                let _ = write!(out, ",FRAME-RATE={fps:.3}");
            }
            // AUDIO must name an existing group (RFC 8216 §4.3.4.2), so a dangling one is dropped.
            if let (Some(g), false) = (&v.audio_group, group.is_empty()) {
                let _ = write!(out, ",AUDIO={}", quoted(g));
            }
            if v.no_closed_captions {
                out.push_str(",CLOSED-CAPTIONS=NONE");
            }
            out.push('\n');
            out.push_str(&uri_line(&v.uri));
            out.push('\n');
        }
        out
    }
}

/// A quoted-string attribute value. HLS has no escapes, so characters it forbids (`"`, CR, LF)
/// are replaced rather than producing a broken playlist.
fn quoted(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| match c {
            '"' => '\'',
            '\r' | '\n' => ' ',
            c => c,
        })
        .collect();
    format!("\"{clean}\"")
}

/// A quoted URI attribute: forbidden characters are percent-encoded, which keeps the URI valid.
fn quoted_uri(uri: &str) -> String {
    format!("\"{}\"", uri_line(uri))
}

/// A URI line: percent-encode the characters that would break the line or a quoted string.
fn uri_line(uri: &str) -> String {
    uri.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(uri: &str, duration: f64) -> MediaSegment {
        MediaSegment {
            uri: uri.into(),
            duration,
            discontinuity: false,
        }
    }

    #[test]
    fn vod_media_playlist() {
        let p = MediaPlaylist::vod(
            "init.mp4",
            vec![
                seg("seg-1.m4s", 4.0),
                seg("seg-2.m4s", 4.004),
                seg("seg-3.m4s", 1.5),
            ],
        );
        assert_eq!(p.target_duration, 5);
        assert_eq!(
            p.render(),
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-TARGETDURATION:5\n\
             #EXT-X-MEDIA-SEQUENCE:0\n\
             #EXT-X-PLAYLIST-TYPE:VOD\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MAP:URI=\"init.mp4\"\n\
             #EXTINF:4.00000,\n\
             seg-1.m4s\n\
             #EXTINF:4.00400,\n\
             seg-2.m4s\n\
             #EXTINF:1.50000,\n\
             seg-3.m4s\n\
             #EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn target_duration_rounding() {
        let t = |d: &[f64]| target_duration(&d.iter().map(|&d| seg("x", d)).collect::<Vec<_>>());
        assert_eq!(t(&[4.0]), 4);
        assert_eq!(t(&[4.0000001]), 4);
        assert_eq!(t(&[4.0011]), 5);
        assert_eq!(t(&[2.0, 6.006, 3.0]), 7);
        assert_eq!(t(&[0.2]), 1);
        assert_eq!(t(&[]), 1);
    }

    #[test]
    fn event_playlist_with_discontinuity_and_no_endlist() {
        let mut second = seg("b/1.m4s", 2.0);
        second.discontinuity = true;
        let p = MediaPlaylist {
            target_duration: 2,
            media_sequence: 42,
            playlist_type: Some(PlaylistType::Event),
            independent_segments: false,
            map_uri: "a/init.mp4".into(),
            segments: vec![seg("a/9.m4s", 1.96), second],
            ended: false,
        };
        assert_eq!(
            p.render(),
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-TARGETDURATION:2\n\
             #EXT-X-MEDIA-SEQUENCE:42\n\
             #EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-MAP:URI=\"a/init.mp4\"\n\
             #EXTINF:1.96000,\n\
             a/9.m4s\n\
             #EXT-X-DISCONTINUITY\n\
             #EXTINF:2.00000,\n\
             b/1.m4s\n"
        );
    }

    #[test]
    fn uris_cannot_break_lines_or_quotes() {
        let p = MediaPlaylist::vod("in\"it.mp4", vec![seg("a\nb.m4s", 1.0)]);
        let text = p.render();
        assert!(text.contains("#EXT-X-MAP:URI=\"in%22it.mp4\"\n"));
        assert!(text.contains("#EXTINF:1.00000,\na%0Ab.m4s\n"));
    }

    fn audio(group: &str, name: &str, default: bool) -> AudioRendition {
        AudioRendition {
            group_id: group.into(),
            name: name.into(),
            uri: format!("audio/{name}/index.m3u8"),
            default,
            channels: Some(2),
            language: Some("en".into()),
            codecs: "mp4a.40.2".into(),
        }
    }

    fn variant(name: &str, bandwidth: u64, w: u32, h: u32, group: Option<&str>) -> Variant {
        Variant {
            uri: format!("{name}/index.m3u8"),
            bandwidth,
            average_bandwidth: Some(bandwidth * 4 / 5),
            width: w,
            height: h,
            codecs: "avc1.64001f".into(),
            frame_rate: Some(30000.0 / 1001.0),
            audio_group: group.map(Into::into),
            no_closed_captions: false,
        }
    }

    #[test]
    fn master_playlist_with_audio_group() {
        let p = MasterPlaylist {
            independent_segments: true,
            audio: vec![audio("aac", "main", true)],
            variants: vec![
                variant("360p", 928_000, 640, 360, Some("aac")),
                variant("720p", 2_928_000, 1280, 720, Some("aac")),
            ],
        };
        assert_eq!(
            p.render(),
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"main\",LANGUAGE=\"en\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"audio/main/index.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=2928000,AVERAGE-BANDWIDTH=2342400,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=29.970,AUDIO=\"aac\"\n\
             720p/index.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=928000,AVERAGE-BANDWIDTH=742400,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=29.970,AUDIO=\"aac\"\n\
             360p/index.m3u8\n"
        );
    }

    #[test]
    fn master_playlist_without_audio_and_with_dangling_group() {
        let mut v = variant("480p", 1_400_000, 854, 480, Some("missing"));
        v.average_bandwidth = None;
        v.frame_rate = None;
        let mut a = audio("aac", "Commentary \"dir\"", false);
        a.language = None;
        a.channels = None;
        let p = MasterPlaylist {
            independent_segments: false,
            audio: vec![a],
            variants: vec![v],
        };
        assert_eq!(
            p.render(),
            "#EXTM3U\n\
             #EXT-X-VERSION:7\n\
             #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"Commentary 'dir'\",DEFAULT=NO,AUTOSELECT=YES,URI=\"audio/Commentary %22dir%22/index.m3u8\"\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1400000,CODECS=\"avc1.64001f\",RESOLUTION=854x480\n\
             480p/index.m3u8\n"
        );
    }
}
