//! Videos: list, inspect, delete.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use oxcast_base::VideoId;
use oxcast_db::{Video, VideoStatus};
use oxcast_store::keys;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct RenditionView {
    pub name: String,
    pub width: u32,
    pub height: u32,
    /// Peak bits per second including audio.
    pub bandwidth: u64,
    pub codecs: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoView {
    pub id: String,
    pub title: String,
    pub filename: String,
    /// `uploading`, `queued`, `processing`, `ready` or `failed`.
    pub status: String,
    /// Processing progress, 0 to 1.
    pub progress: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_s: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub size: u64,
    pub renditions: Vec<RenditionView>,
    pub hls_url: String,
    pub dash_url: String,
    pub poster_url: String,
    pub created_at: String,
    pub updated_at: String,
    /// While a long video is encoded in chunks (one job each, on any worker): how they stand.
    /// Only in `GET /api/v1/videos/{id}`, and only for a chunked video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunksView>,
}

/// Chunk jobs of a video encoded in chunks.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChunksView {
    pub total: u32,
    pub done: u32,
    pub running: u32,
    pub queued: u32,
    pub failed: u32,
}

pub(crate) fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl From<&Video> for VideoView {
    fn from(v: &Video) -> Self {
        Self::with_base(v, None)
    }
}

/// Where a video's published objects are read: this server's origin (`/v/{id}`), or, with
/// `public_base_url`, the bucket or CDN in front of it, where they sit under `videos/{id}`.
pub fn playback_base(public_base_url: Option<&str>, video: VideoId) -> String {
    match public_base_url
        .map(|u| u.trim_end_matches('/'))
        .filter(|u| !u.is_empty())
    {
        Some(base) => format!("{base}/{}", keys::video_prefix(video)),
        None => format!("/v/{video}"),
    }
}

impl VideoView {
    /// The view with playback URLs under `public_base_url` when one is configured.
    pub fn with_base(v: &Video, public_base_url: Option<&str>) -> Self {
        let base = playback_base(public_base_url, v.id);
        Self {
            id: v.id.to_string(),
            title: v.title.clone(),
            filename: v.filename.clone(),
            status: v.status.to_string(),
            progress: match v.status {
                VideoStatus::Ready => 1.0,
                _ => v.progress,
            },
            error: v.error.clone(),
            duration_s: v.duration_s,
            width: v.width,
            height: v.height,
            size: v.source_size,
            renditions: v
                .renditions
                .iter()
                .map(|r| RenditionView {
                    name: r.name.clone(),
                    width: r.width,
                    height: r.height,
                    bandwidth: r.bandwidth,
                    codecs: r.codecs.clone(),
                })
                .collect(),
            hls_url: format!("{base}/master.m3u8"),
            dash_url: format!("{base}/manifest.mpd"),
            poster_url: format!("{base}/poster.jpg"),
            created_at: rfc3339(v.created_at),
            updated_at: rfc3339(v.updated_at),
            chunks: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VideoList {
    pub videos: Vec<VideoView>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

pub(crate) fn parse_video_id(s: &str) -> ApiResult<VideoId> {
    s.parse().map_err(|_| ApiError::NotFound("video".into()))
}

/// Videos, newest first.
#[utoipa::path(get, operation_id = "listVideos", path = "/api/v1/videos", params(("limit" = Option<i64>, Query, description = "at most this many, default 100")),
    responses((status = 200, body = VideoList)))]
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<VideoList>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let videos = state.db.videos(limit).await?;
    let public = state.config.public_base_url.as_deref();
    Ok(Json(VideoList {
        videos: videos
            .iter()
            .map(|v| VideoView::with_base(v, public))
            .collect(),
    }))
}

/// One video with its status, processing progress and playback URLs.
#[utoipa::path(get, operation_id = "getVideo", path = "/api/v1/videos/{video_id}", params(("video_id" = String, Path)),
    responses((status = 200, body = VideoView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<VideoView>> {
    let id = parse_video_id(&id)?;
    let v = state
        .db
        .video(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("video".into()))?;
    let mut view = VideoView::with_base(&v, state.config.public_base_url.as_deref());
    let c = state.db.chunk_counts(id).await?;
    if c.total > 0 {
        view.chunks = Some(ChunksView {
            total: c.total,
            done: c.done,
            running: c.running,
            queued: c.queued,
            failed: c.failed,
        });
    }
    Ok(Json(view))
}

/// Delete a video, its upload and every stored object.
#[utoipa::path(delete, operation_id = "deleteVideo", path = "/api/v1/videos/{video_id}", params(("video_id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = parse_video_id(&id)?;
    let upload = state.db.upload_for_video(id).await?;
    let s3 = match &upload {
        Some(u) => state.db.s3_upload(u.id).await?,
        None => None,
    };
    if !state.db.delete_video(id).await? {
        return Err(ApiError::NotFound("video".into()));
    }
    // Rows first: once they are gone nothing serves or processes the objects. This node's
    // origin stops at once; other API nodes within the origin's ready TTL (1 s).
    state.origin.forget(id).await;
    let mut removed = state.store.delete_prefix(&keys::video_prefix(id)).await?;
    if let Some(u) = upload {
        removed += state
            .store
            .delete_prefix(&keys::upload_prefix(u.id))
            .await?;
        // Straight-to-bucket uploads: the assembled source, or the parts of an unfinished one.
        if let (Some(mp), Some(s3)) = (state.store.multipart(), s3) {
            if u.state == oxcast_db::UploadState::Open {
                if let Err(e) = mp
                    .abort(&s3.object_key, &s3.multipart_id, state.clock.now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "could not abort the multipart upload; the bucket's lifecycle rule will");
                }
            }
            let source = keys::upload_source(u.id);
            if state.store.head(&source).await?.is_some() {
                state.store.delete(&source).await?;
                removed += 1;
            }
        }
    }
    tracing::info!(video = %id, removed, "video deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn playback_urls_follow_public_base_url() {
        let v: VideoId = "fedcba9876543210fedcba9876543210".parse().unwrap();
        assert_eq!(
            playback_base(None, v),
            "/v/fedcba9876543210fedcba9876543210"
        );
        assert_eq!(
            playback_base(Some(""), v),
            "/v/fedcba9876543210fedcba9876543210"
        );
        assert_eq!(
            playback_base(Some("https://cdn.example.com/media/"), v),
            "https://cdn.example.com/media/videos/fedcba9876543210fedcba9876543210"
        );
    }
}
