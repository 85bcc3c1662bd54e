//! The master playlist of an encoding ladder: one rule for VOD and live.
//!
//! Both kinds list their video renditions as variants that play with one shared audio
//! rendition (group `aud`, default), and state the bandwidth a player needs as the video's
//! plus the audio's. What differs is only what each knows: VOD knows average bitrates and
//! frame rates from the finished segments; live knows whether the source carried captions.

use super::{AudioRendition, MasterPlaylist, Variant};

/// The `GROUP-ID` of the ladder's audio.
pub const AUDIO_GROUP: &str = "aud";

/// The ladder's audio rendition.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderAudio {
    pub uri: String,
    pub codecs: String,
    pub channels: Option<u16>,
    /// Bits/s.
    pub peak: u64,
    pub average: Option<u64>,
}

/// One video rendition.
#[derive(Clone, Debug, PartialEq)]
pub struct LadderVideo {
    pub uri: String,
    pub codecs: String,
    pub width: u32,
    pub height: u32,
    pub frame_rate: Option<f64>,
    /// Bits/s of the video alone.
    pub peak: u64,
    pub average: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ladder {
    pub audio: Option<LadderAudio>,
    pub video: Vec<LadderVideo>,
    /// Every segment starts with a keyframe and can be decoded alone.
    pub independent_segments: bool,
    /// `Some(false)`: the video is known to have no CEA-608/708 captions
    /// (`CLOSED-CAPTIONS=NONE`). `None`: not known, players look for them.
    pub captions: Option<bool>,
}

impl Ladder {
    pub fn master(&self) -> MasterPlaylist {
        let audio = self.audio.as_ref();
        MasterPlaylist {
            independent_segments: self.independent_segments,
            audio: audio
                .map(|a| AudioRendition {
                    group_id: AUDIO_GROUP.into(),
                    name: "Audio".into(),
                    uri: a.uri.clone(),
                    default: true,
                    channels: a.channels,
                    language: None,
                    codecs: a.codecs.clone(),
                })
                .into_iter()
                .collect(),
            variants: self
                .video
                .iter()
                .map(|v| Variant {
                    uri: v.uri.clone(),
                    bandwidth: v.peak + audio.map_or(0, |a| a.peak),
                    // Only when every part of the sum is known.
                    average_bandwidth: match (v.average, audio.map(|a| a.average)) {
                        (Some(v), None) => Some(v),
                        (Some(v), Some(Some(a))) => Some(v + a),
                        _ => None,
                    },
                    width: v.width,
                    height: v.height,
                    codecs: v.codecs.clone(),
                    frame_rate: v.frame_rate,
                    audio_group: audio.map(|_| AUDIO_GROUP.to_string()),
                    no_closed_captions: self.captions == Some(false),
                })
                .collect(),
        }
    }

    pub fn render(&self) -> String {
        self.master().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Ladder {
        Ladder {
            audio: Some(LadderAudio {
                uri: "audio/index.m3u8".into(),
                codecs: "mp4a.40.2".into(),
                channels: Some(2),
                peak: 130_000,
                average: Some(128_000),
            }),
            video: vec![LadderVideo {
                uri: "720p/index.m3u8".into(),
                codecs: "avc1.64001f".into(),
                width: 1280,
                height: 720,
                frame_rate: Some(30.0),
                peak: 3_000_000,
                average: Some(2_500_000),
            }],
            independent_segments: true,
            captions: None,
        }
    }

    #[test]
    fn bandwidths_include_the_audio_and_averages_only_when_all_are_known() {
        let m = ladder().master();
        assert_eq!(m.variants[0].bandwidth, 3_130_000);
        assert_eq!(m.variants[0].average_bandwidth, Some(2_628_000));
        assert_eq!(m.variants[0].audio_group.as_deref(), Some("aud"));
        let mut l = ladder();
        l.audio.as_mut().unwrap().average = None;
        assert_eq!(l.master().variants[0].average_bandwidth, None);
        l.audio = None;
        let m = l.master();
        assert_eq!(m.variants[0].bandwidth, 3_000_000);
        assert_eq!(m.variants[0].average_bandwidth, Some(2_500_000));
        assert!(m.audio.is_empty() && m.variants[0].audio_group.is_none());
    }

    #[test]
    fn captions_are_declared_absent_only_when_known() {
        let mut l = ladder();
        assert!(!l.render().contains("CLOSED-CAPTIONS"));
        l.captions = Some(false);
        assert!(l.render().contains("CLOSED-CAPTIONS=NONE"));
        l.captions = Some(true);
        assert!(!l.render().contains("CLOSED-CAPTIONS"));
        let text = ladder().render();
        assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
        assert!(text.contains("CODECS=\"avc1.64001f,mp4a.40.2\""), "{text}");
    }
}
