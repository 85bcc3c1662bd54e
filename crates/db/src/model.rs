//! Rows as domain types.

use std::fmt;
use std::str::FromStr;

use oxcast_base::clock::Millis;
use oxcast_base::{UploadId, VideoId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    /// Created; parts are arriving.
    Uploading,
    /// Upload complete; a processing job waits for a worker.
    Queued,
    Processing,
    /// Every output object is stored; playback is served.
    Ready,
    Failed,
}

impl VideoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Queued => "queued",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for VideoStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VideoStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "uploading" => Self::Uploading,
            "queued" => Self::Queued,
            "processing" => Self::Processing,
            "ready" => Self::Ready,
            "failed" => Self::Failed,
            _ => return Err(format!("unknown video status {s:?}")),
        })
    }
}

/// One rung of a published video, as listed by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second (HLS BANDWIDTH), video plus the shared audio.
    pub bandwidth: u64,
    pub codecs: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    pub id: VideoId,
    pub title: String,
    pub filename: String,
    pub status: VideoStatus,
    pub progress: f64,
    pub error: Option<String>,
    pub duration_s: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub renditions: Vec<Rendition>,
    pub source_size: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadState {
    Open,
    Completed,
}

impl UploadState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Completed => "completed",
        }
    }
}

impl FromStr for UploadState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Self::Open),
            "completed" => Ok(Self::Completed),
            _ => Err(format!("unknown upload state {s:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    pub id: UploadId,
    pub video_id: VideoId,
    pub size: u64,
    pub part_size: u64,
    pub state: UploadState,
    pub created_at: Millis,
    pub expires_at: Millis,
}

impl Upload {
    pub fn part_count(&self) -> u32 {
        self.size.div_ceil(self.part_size).max(1) as u32
    }

    /// Exact byte length part `n` (1-based) must have.
    pub fn expected_part_size(&self, n: u32) -> Option<u64> {
        let count = self.part_count();
        if n == 0 || n > count {
            return None;
        }
        if n < count {
            Some(self.part_size)
        } else {
            Some(self.size - self.part_size * (count as u64 - 1))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPart {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    /// The stored object's name suffix (see `oxcast_store::keys::upload_part`); `None` for
    /// parts stored before objects were named per PUT.
    pub object: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(size: u64, part_size: u64) -> Upload {
        Upload {
            id: UploadId::new(),
            video_id: VideoId::new(),
            size,
            part_size,
            state: UploadState::Open,
            created_at: 0,
            expires_at: 0,
        }
    }

    #[test]
    fn part_sizes_cover_the_file_exactly() {
        let u = upload(25, 10);
        assert_eq!(u.part_count(), 3);
        assert_eq!(u.expected_part_size(1), Some(10));
        assert_eq!(u.expected_part_size(3), Some(5));
        assert_eq!(u.expected_part_size(4), None);
        assert_eq!(u.expected_part_size(0), None);
        let exact = upload(20, 10);
        assert_eq!(exact.part_count(), 2);
        assert_eq!(exact.expected_part_size(2), Some(10));
    }

    #[test]
    fn status_text_round_trips() {
        for s in [
            VideoStatus::Uploading,
            VideoStatus::Queued,
            VideoStatus::Processing,
            VideoStatus::Ready,
            VideoStatus::Failed,
        ] {
            assert_eq!(s.as_str().parse::<VideoStatus>().unwrap(), s);
        }
    }
}
