//! From an encoded fragmented-MP4 file to stored init and media segments.
//!
//! The file is streamed through the incremental splitter, so memory holds one segment at a
//! time however long the video is. Where segments end is decided by
//! [`oxcast_media::cmaf::SegmentBuilder`]; this module only moves bytes.

use std::path::Path;

use bytes::Bytes;
use oxcast_base::VideoId;
use oxcast_media::cmaf::{SegmentBuilder, FIRST_SEGMENT_NUMBER};
use oxcast_media::mp4::{Fmp4Splitter, SplitEvent, TrackInfo};
use oxcast_store::{keys, Store};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub number: u64,
    /// Decode time of the first sample, timescale units.
    pub start: u64,
    pub duration: u64,
    pub bytes: u64,
    pub samples: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackagedRendition {
    pub name: String,
    pub track: TrackInfo,
    pub segments: Vec<SegmentInfo>,
}

impl PackagedRendition {
    pub fn timescale(&self) -> f64 {
        f64::from(self.track.timescale.max(1))
    }

    pub fn duration_s(&self) -> f64 {
        self.segments.iter().map(|s| s.duration).sum::<u64>() as f64 / self.timescale()
    }

    /// Highest bitrate of any one segment, bits/s.
    pub fn peak_bandwidth(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.duration > 0)
            .map(|s| (s.bytes as f64 * 8.0 * self.timescale() / s.duration as f64).ceil() as u64)
            .max()
            .unwrap_or(0)
    }

    pub fn average_bandwidth(&self) -> u64 {
        let d = self.duration_s();
        if d <= 0.0 {
            return 0;
        }
        (self.segments.iter().map(|s| s.bytes).sum::<u64>() as f64 * 8.0 / d).ceil() as u64
    }

    /// Start of every segment but the first, seconds: where another rendition must cut to
    /// have the same segments.
    pub fn cut_times(&self) -> Vec<f64> {
        self.segments
            .iter()
            .skip(1)
            .map(|s| s.start as f64 / self.timescale())
            .collect()
    }

    pub fn frame_rate(&self) -> Option<f64> {
        let d = self.duration_s();
        let n: u64 = self.segments.iter().map(|s| s.samples).sum();
        (d > 0.0 && n > 0).then(|| n as f64 / d)
    }
}

/// Where a rendition's segments end.
#[derive(Debug, Clone, PartialEq)]
pub enum Cuts {
    /// At the encoder's fragment (GOP) boundaries, about this many seconds apart.
    Target(f64),
    /// Where another rendition's segments start (seconds, the first one excluded): audio
    /// follows the video so both have the same segments.
    At(Vec<f64>),
}

/// Where a rendition's output goes and where it sits in the whole video: a whole-file encode
/// is `Placement::whole(name)`; a chunk is moved to its first frame and first segment and
/// stored under its attempt's folder until it is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Folder under the video's prefix (`720p`, or `chunks/c3/a1/720p`).
    pub folder: String,
    pub first_number: u64,
    /// Frames of the whole video before this output's first frame, at `frame_rate`: every
    /// decode time moves by as much (in the track's timescale, known once the init is read).
    pub shift_frames: u64,
    pub frame_rate: (u32, u32),
    /// Added to every `mfhd` sequence number.
    pub sequence_offset: u32,
}

impl Placement {
    pub fn whole(name: &str) -> Self {
        Self {
            folder: name.to_string(),
            first_number: FIRST_SEGMENT_NUMBER,
            shift_frames: 0,
            frame_rate: (1, 1),
            sequence_offset: 0,
        }
    }

    /// One frame in `timescale` units, if it is a whole number of them (ffmpeg picks video
    /// timescales for which it is).
    pub fn frame_duration(&self, timescale: u32) -> Option<u64> {
        let (num, den) = self.frame_rate;
        let n = u64::from(timescale) * u64::from(den);
        (num > 0 && n % u64::from(num) == 0).then(|| n / u64::from(num))
    }
}

/// Splits `path` into `{folder}/init.mp4` and `{folder}/seg-{n}.m4s` under the video's prefix.
pub async fn package_rendition(
    store: &Store,
    video: VideoId,
    name: &str,
    path: &Path,
    cuts: &Cuts,
    place: &Placement,
) -> Result<PackagedRendition> {
    let err = |source| Error::Package {
        rendition: name.to_string(),
        source,
    };
    let mut file = tokio::fs::File::open(path).await?;
    let mut splitter = Fmp4Splitter::new();
    let mut builder: Option<SegmentBuilder> = None;
    let mut track: Option<TrackInfo> = None;
    let mut pending: Vec<u8> = Vec::new();
    let mut pending_samples = 0u64;
    let mut decode_offset = 0u64;
    let mut segments = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        for event in splitter.push(&buf[..n]).map_err(err)? {
            match event {
                SplitEvent::Init { bytes, track: t } => {
                    let key = keys::video_object(video, &format!("{}/init.mp4", place.folder))?;
                    store.put(&key, Bytes::from(bytes)).await?;
                    let ts = f64::from(t.timescale);
                    builder = Some(match cuts {
                        // Half the target: each encoder fragment is one GOP of ~target length,
                        // so a GOP a frame short of the target still closes its own segment.
                        Cuts::Target(s) => {
                            SegmentBuilder::new(((s * 0.5 * ts) as u64).max(1), place.first_number)
                        }
                        Cuts::At(at) => {
                            let at: Vec<u64> = at.iter().map(|s| (s * ts).round() as u64).collect();
                            SegmentBuilder::aligned(&at, place.first_number)
                        }
                    });
                    if place.shift_frames > 0 {
                        let d = place.frame_duration(t.timescale).ok_or_else(|| {
                            err(oxcast_media::Error::InvalidBox {
                                box_type: oxcast_media::FourCc(*b"mdhd"),
                                offset: 0,
                                reason: format!(
                                    "timescale {} is not a whole number of frames at {}/{} fps",
                                    t.timescale, place.frame_rate.0, place.frame_rate.1
                                ),
                            })
                        })?;
                        decode_offset = place.shift_frames * d;
                    }
                    track = Some(t);
                }
                SplitEvent::Fragment {
                    mut bytes,
                    mut fragment,
                } => {
                    // Refuse what ffmpeg's DASH reader would mistime, rather than publish it.
                    oxcast_media::mp4::check_dash_timing(&bytes).map_err(err)?;
                    if decode_offset > 0 || place.sequence_offset > 0 {
                        oxcast_media::mp4::retime_fragment(
                            &mut bytes,
                            decode_offset,
                            place.sequence_offset,
                        )
                        .map_err(err)?;
                        fragment.base_media_decode_time += decode_offset;
                        fragment.earliest_presentation_time += decode_offset as i64;
                        fragment.sequence_number += place.sequence_offset;
                    }
                    let b = builder.as_mut().ok_or_else(|| {
                        err(oxcast_media::Error::MissingInit { len: bytes.len() })
                    })?;
                    if let Some(closed) = b.push(&fragment) {
                        store_segment(
                            store,
                            video,
                            &place.folder,
                            &closed,
                            &mut pending,
                            pending_samples,
                            &mut segments,
                        )
                        .await?;
                        pending_samples = 0;
                    }
                    pending.extend_from_slice(&bytes);
                    pending_samples += u64::from(fragment.sample_count);
                }
            }
        }
    }
    splitter.finish().map_err(err)?;
    let (Some(track), Some(b)) = (track, builder) else {
        return Err(err(oxcast_media::Error::MissingInit { len: 0 }));
    };
    if let Some(last) = b.finish() {
        store_segment(
            store,
            video,
            &place.folder,
            &last,
            &mut pending,
            pending_samples,
            &mut segments,
        )
        .await?;
    }
    Ok(PackagedRendition {
        name: name.to_string(),
        track,
        segments,
    })
}

async fn store_segment(
    store: &Store,
    video: VideoId,
    folder: &str,
    plan: &oxcast_media::cmaf::SegmentPlan,
    pending: &mut Vec<u8>,
    samples: u64,
    out: &mut Vec<SegmentInfo>,
) -> Result<()> {
    let bytes = std::mem::take(pending);
    let key = keys::video_object(video, &format!("{folder}/seg-{}.m4s", plan.number))?;
    out.push(SegmentInfo {
        number: plan.number,
        start: plan.start,
        duration: plan.duration,
        bytes: bytes.len() as u64,
        samples,
    });
    store.put(&key, Bytes::from(bytes)).await?;
    Ok(())
}
