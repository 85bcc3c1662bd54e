//! Live streams in the API: create, list, inspect, reset keys, health and latency. What viewers
//! fetch is in [`crate::live_origin`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oxcast_base::StreamId;
use oxcast_db::{LiveStream, SessionStatus};
use oxcast_live::LiveManager;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::videos::rfc3339;
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateLiveStream {
    pub title: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Bitrate the publisher sends, kbit/s (session average).
    pub ingest_kbps: f64,
    /// Frames per second the encoder achieves.
    pub fps: f64,
    pub dropped_frames: u64,
    /// Encoder speed relative to real time; must stay ≥ 1.
    pub encoder_speed: f64,
    /// Estimated glass-to-glass latency of a low-latency viewer, seconds.
    pub latency_s: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentSession {
    pub id: String,
    pub video_id: String,
    pub started_at: String,
    /// A publisher is connected (false during the reconnect grace period). On a node that
    /// does not run the stream's encoder: as last published, `true` before anything was read.
    pub publishing: bool,
    /// Only from the node that runs the stream's encoder; `null` elsewhere.
    pub health: Option<Health>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub video_id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// `live` or `ended`.
    pub status: String,
}

/// A publisher the server accepted, then refused once it saw the media (for example an
/// audio-only stream). No session or video was created for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefusedPublishView {
    /// What the streamer has to change.
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveStreamView {
    pub id: String,
    pub title: String,
    pub stream_key: String,
    pub rtmp_url: Option<String>,
    pub srt_url: Option<String>,
    pub hls_url: String,
    pub dash_url: String,
    /// `idle` or `live`.
    pub status: String,
    pub created_at: String,
    pub current_session: Option<CurrentSession>,
    /// The last publisher refused after its media was probed; cleared when one goes live.
    pub last_refused_publish: Option<RefusedPublishView>,
    pub sessions: Vec<SessionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveStreamList {
    pub live_streams: Vec<LiveStreamView>,
}

fn live(state: &AppState) -> ApiResult<&std::sync::Arc<LiveManager>> {
    state.live.as_ref().ok_or_else(|| {
        ApiError::NotFound("live streaming is not enabled on this server; live".into())
    })
}

fn new_key() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn public_host(state: &AppState, addr: std::net::SocketAddr) -> String {
    match &state.config.live.public_host {
        Some(h) => h.clone(),
        None if addr.ip().is_unspecified() => "127.0.0.1".into(),
        None => addr.ip().to_string(),
    }
}

async fn view(state: &AppState, s: &LiveStream) -> ApiResult<LiveStreamView> {
    let cfg = &state.config.live;
    let status = state.live.as_ref().and_then(|l| l.status(s.id));
    let refused = state.live.as_ref().and_then(|l| l.last_refused(s.id));
    let sessions = state.db.live_sessions(s.id).await?;
    // This node's session, when it runs one; an ended one here says nothing of other nodes.
    let here = status.as_ref().is_some_and(|st| !st.ended);
    let ended_here = status
        .as_ref()
        .filter(|st| st.ended)
        .map(|st| st.session_id);
    let mut current = status.filter(|st| !st.ended).map(|st| CurrentSession {
        id: st.session_id.to_string(),
        video_id: st.video_id.to_string(),
        started_at: rfc3339(st.started_at_ms),
        publishing: st.publishing,
        health: Some(Health {
            ingest_kbps: (st.ingest_kbps * 10.0).round() / 10.0,
            fps: st.fps,
            dropped_frames: st.dropped_frames,
            encoder_speed: st.encoder_speed,
            latency_s: st.latency_s.map(|l| (l * 100.0).round() / 100.0),
        }),
    });
    // Encoded on another node: what the database and the published playlists say (the
    // session row stays live while its recording is published after the playlists end).
    if !here {
        if let Some(x) = sessions
            .iter()
            .find(|x| x.status == SessionStatus::Live && Some(x.id) != ended_here)
        {
            let (publishing, ended) = state
                .live_serve
                .replica
                .as_ref()
                .and_then(|r| r.publishing(x.id))
                .unwrap_or((true, false));
            current = (!ended).then(|| CurrentSession {
                id: x.id.to_string(),
                video_id: x.video_id.to_string(),
                started_at: rfc3339(x.started_at),
                publishing,
                health: None,
            });
        }
    }
    Ok(LiveStreamView {
        id: s.id.to_string(),
        title: s.title.clone(),
        stream_key: s.stream_key.clone(),
        rtmp_url: cfg.rtmp_listen.map(|a| {
            format!(
                "rtmp://{}:{}/live/{}",
                public_host(state, a),
                a.port(),
                s.stream_key
            )
        }),
        srt_url: cfg.srt_listen.map(|a| {
            format!(
                "srt://{}:{}?streamid={}",
                public_host(state, a),
                a.port(),
                s.stream_key
            )
        }),
        hls_url: format!("/live/{}/master.m3u8", s.id),
        dash_url: format!("/live/{}/manifest.mpd", s.id),
        status: if current.is_some() { "live" } else { "idle" }.into(),
        created_at: rfc3339(s.created_at),
        current_session: current,
        last_refused_publish: refused.map(|r| RefusedPublishView {
            reason: r.reason,
            at: rfc3339(r.at_ms),
        }),
        sessions: sessions
            .iter()
            .map(|x| SessionView {
                id: x.id.to_string(),
                video_id: x.video_id.to_string(),
                started_at: rfc3339(x.started_at),
                ended_at: x.ended_at.map(rfc3339),
                status: x.status.as_str().into(),
            })
            .collect(),
    })
}

fn parse_stream(id: &str) -> ApiResult<StreamId> {
    id.parse()
        .map_err(|_| ApiError::NotFound("live stream".into()))
}

async fn stream(state: &AppState, id: &str) -> ApiResult<LiveStream> {
    state
        .db
        .live_stream(parse_stream(id)?)
        .await?
        .ok_or_else(|| ApiError::NotFound("live stream".into()))
}

/// Create a live stream and its stream key.
#[utoipa::path(post, operation_id = "createLiveStream", path = "/api/v1/live-streams", request_body = CreateLiveStream,
    responses((status = 201, body = LiveStreamView), (status = 400)))]
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateLiveStream>,
) -> ApiResult<Response> {
    // A stream is a row and a key: an API node creates it whether or not it runs encoders
    // itself (in a split deployment the ingest,live processes do).
    let title = req.title.trim();
    if title.is_empty() || title.len() > 300 {
        return Err(ApiError::BadRequest("title must be 1 to 300 bytes".into()));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "title must not contain control characters (NUL, escape, newlines)".into(),
        ));
    }
    let s = state
        .db
        .create_live_stream(title, &new_key(), state.clock.now_ms())
        .await?;
    tracing::info!(stream = %s.id, "live stream created");
    Ok((StatusCode::CREATED, Json(view(&state, &s).await?)).into_response())
}

/// Live streams, newest first.
#[utoipa::path(get, operation_id = "listLiveStreams", path = "/api/v1/live-streams", responses((status = 200, body = LiveStreamList)))]
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<LiveStreamList>> {
    let mut out = Vec::new();
    for s in state.db.live_streams().await? {
        out.push(view(&state, &s).await?);
    }
    Ok(Json(LiveStreamList { live_streams: out }))
}

/// One live stream: status, health of the current session, past sessions.
#[utoipa::path(get, operation_id = "getLiveStream", path = "/api/v1/live-streams/{id}", params(("id" = String, Path)),
    responses((status = 200, body = LiveStreamView), (status = 404)))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<LiveStreamView>> {
    let s = stream(&state, &id).await?;
    Ok(Json(view(&state, &s).await?))
}

/// Replace the stream key; the old key stops working for new connections at once.
#[utoipa::path(post, operation_id = "resetStreamKey", path = "/api/v1/live-streams/{id}/reset-key", params(("id" = String, Path)),
    responses((status = 200, body = LiveStreamView), (status = 404)))]
pub async fn reset_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<LiveStreamView>> {
    let mut s = stream(&state, &id).await?;
    s.stream_key = new_key();
    state.db.reset_stream_key(s.id, &s.stream_key).await?;
    // The old key's publisher goes (a leaked key is the usual reason for a reset); on another
    // live node, within a few seconds of its monitor seeing the new key.
    let kicked = live(&state).is_ok_and(|l| l.disconnect(s.id));
    // Never the key, old or new: logs are read by more people than the stream's owner.
    tracing::info!(stream = %s.id, publisher_disconnected = kicked, "stream key reset");
    Ok(Json(view(&state, &s).await?))
}

/// Delete a live stream. A session in progress ends at once (its publisher is disconnected) and
/// its recording is published; recordings of past sessions stay in the library.
#[utoipa::path(delete, operation_id = "deleteLiveStream", path = "/api/v1/live-streams/{id}", params(("id" = String, Path)),
    responses((status = 204), (status = 404)))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let s = stream(&state, &id).await?;
    // End the session first: it is recorded under the stream's row, which goes next.
    if let Ok(l) = live(&state) {
        l.end_stream(s.id).await;
    }
    state.db.delete_live_stream(s.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

fn percentiles(v: &[f64]) -> Percentiles {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| (!s.is_empty()).then(|| s[((s.len() - 1) as f64 * p).round() as usize]);
    Percentiles {
        count: s.len(),
        p50: q(0.5),
        p95: q(0.95),
        max: s.last().copied(),
    }
}

/// Listing delay of the current session's parts and segments: from the ingest receiving the
/// media at a part's end to the part being in the playlist.
pub async fn latency(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let s = stream(&state, &id).await?;
    let stats = live(&state)?
        .latency_stats(s.id)
        .ok_or_else(|| ApiError::NotFound("session".into()))?;
    let status = live(&state)?.status(s.id);
    Ok(Json(serde_json::json!({
        "parts": percentiles(&stats.parts),
        "segments": percentiles(&stats.segments),
        "encoder_speed": status.as_ref().map(|s| s.encoder_speed),
        "fps": status.as_ref().map(|s| s.fps),
        "dropped_frames": status.as_ref().map(|s| s.dropped_frames),
    })))
}

#[derive(Debug, Deserialize)]
pub struct HealthQuery {
    /// Only samples after this time (epoch ms).
    since: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PublisherView {
    /// `rtmp` or `srt`.
    pub protocol: String,
    pub address: String,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub audio_codec: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleView {
    /// End of the second, epoch ms.
    pub t: i64,
    pub ingest_kbps: f64,
    pub fps: f64,
    pub encoder_speed: f64,
    pub dropped_frames: u64,
    pub keyframe_interval_s: Option<f64>,
    pub viewers: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    /// `no_keyframe`, `encoder_slow`, `bitrate_high` or `bitrate_low`.
    pub kind: String,
    pub message: String,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthHistory {
    /// `idle`, `live`, `reconnecting` (within the grace period) or `ended`.
    pub state: String,
    pub session_id: Option<String>,
    pub started_at: Option<String>,
    pub publisher: Option<PublisherView>,
    /// The latest sample, while live.
    pub current: Option<SampleView>,
    /// One per second of the current (or last) session, oldest first, the last 30 minutes.
    pub samples: Vec<SampleView>,
    pub alerts: Vec<AlertView>,
    /// A viewer counts this long after its last heartbeat.
    /// The last publisher refused once its media was probed (over the limits, audio-only,
    /// unreadable), until one goes live.
    pub last_refused_publish: Option<RefusedPublishView>,
    pub viewer_window_s: f64,
}

fn sample_view(s: &oxcast_live::health::Sample) -> SampleView {
    SampleView {
        t: s.t_ms,
        ingest_kbps: s.ingest_kbps,
        fps: s.fps,
        encoder_speed: s.encoder_speed,
        dropped_frames: s.dropped_frames,
        keyframe_interval_s: s.keyframe_interval_s,
        viewers: s.viewers,
    }
}

/// The streamer's dashboard: state, publisher, one sample per second (bitrate, fps, encoder
/// speed, dropped frames, keyframe interval, viewers) and the alerts in force.
#[utoipa::path(get, operation_id = "getLiveStreamHealth", path = "/api/v1/live-streams/{id}/health",
    params(("id" = String, Path), ("since" = Option<i64>, Query, description = "only samples after this epoch ms")),
    responses((status = 200, body = HealthHistory), (status = 404)))]
pub async fn health(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HealthQuery>,
) -> ApiResult<Json<HealthHistory>> {
    let s = stream(&state, &id).await?;
    let h = live(&state)?.health(s.id, q.since);
    Ok(Json(HealthHistory {
        state: h.state.as_str().into(),
        session_id: h.session_id.map(|i| i.to_string()),
        started_at: h.started_at_ms.map(rfc3339),
        publisher: h.publisher.map(|p| PublisherView {
            protocol: p.protocol,
            address: p.address.to_string(),
            video_codec: p.video_codec,
            width: p.width,
            height: p.height,
            fps: (p.fps * 100.0).round() / 100.0,
            audio_codec: p.audio_codec,
        }),
        current: h.current.as_ref().map(sample_view),
        samples: h.samples.iter().map(sample_view).collect(),
        alerts: h
            .alerts
            .into_iter()
            .map(|a| AlertView {
                kind: a.kind.as_str().into(),
                message: a.message,
                since: rfc3339(a.since_ms),
            })
            .collect(),
        last_refused_publish: live(&state)?
            .last_refused(s.id)
            .map(|r| RefusedPublishView {
                reason: r.reason,
                at: rfc3339(r.at_ms),
            }),
        viewer_window_s: oxcast_live::viewers::WINDOW_MS as f64 / 1000.0,
    }))
}
