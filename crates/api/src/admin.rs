//! The operator's API: the processing queue, and retrying a failed job.
//!
//! Behind the same protection as the rest of the API (the optional bearer token) until
//! accounts exist.

use axum::extract::{Path, Query, State};
use axum::Json;
use oxcast_base::JobId;
use oxcast_db::admin::{AdminJob, JobState, Retried};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::videos::rfc3339;
use crate::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminJobView {
    pub id: String,
    pub video_id: String,
    /// The video's title, as the uploader typed it (show it as text).
    pub title: String,
    /// `process_video` (a whole video, or the split of a long one), `encode_chunk`,
    /// `encode_audio` or `stitch`.
    pub kind: String,
    /// Which chunk, for `encode_chunk`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    /// Claims so far, the running one included; a retry resets it.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The video's processing progress, 0 to 1.
    pub progress: f64,
    /// The worker holding the job's lease (`node:pid:slot`), while it runs.
    pub worker: Option<String>,
    /// Why the last attempt failed (or was handed back).
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&AdminJob> for AdminJobView {
    fn from(j: &AdminJob) -> Self {
        Self {
            id: j.id.to_string(),
            video_id: j.video_id.to_string(),
            title: j.title.clone(),
            kind: j.kind.clone(),
            chunk: j.chunk,
            state: j.state.to_string(),
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            progress: match j.state {
                JobState::Done => 1.0,
                _ => j.progress,
            },
            worker: j.lease_owner.clone(),
            last_error: j.last_error.clone(),
            created_at: rfc3339(j.created_at),
            updated_at: rfc3339(j.updated_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminJobList {
    pub jobs: Vec<AdminJobView>,
}

#[derive(Debug, Deserialize)]
pub struct JobsQuery {
    state: Option<String>,
    limit: Option<i64>,
}

/// Processing jobs, most recently changed first: all, or those in one state.
#[utoipa::path(get, operation_id = "listJobs", path = "/api/v1/admin/jobs",
    params(
        ("state" = Option<String>, Query, description = "queued, running, failed or done; all when absent"),
        ("limit" = Option<i64>, Query, description = "at most this many, default 100"),
    ),
    responses((status = 200, body = AdminJobList), (status = 400), (status = 401)))]
pub async fn jobs(
    State(state): State<AppState>,
    Query(q): Query<JobsQuery>,
) -> ApiResult<Json<AdminJobList>> {
    let filter = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let jobs = state.db.admin_jobs(filter, limit).await?;
    Ok(Json(AdminJobList {
        jobs: jobs.iter().map(AdminJobView::from).collect(),
    }))
}

/// Puts a failed job back in the queue with its attempts reset (its video back to `queued`).
#[utoipa::path(post, operation_id = "retryJob", path = "/api/v1/admin/jobs/{job_id}/retry", params(("job_id" = String, Path)),
    responses((status = 200, body = AdminJobView), (status = 404), (status = 409, description = "the job has not failed")))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<AdminJobView>> {
    let id: JobId = id.parse().map_err(|_| ApiError::NotFound("job".into()))?;
    match state.db.retry_job(id, state.clock.now_ms()).await? {
        Retried::Queued(job) => {
            tracing::info!(job = %id, video = %job.video_id, "failed job queued again by an operator");
            state.wake.notify_waiters();
            Ok(Json(AdminJobView::from(&job)))
        }
        Retried::NotFailed(s) => Err(ApiError::Conflict(format!(
            "job {id} is {s}; only a failed job can be retried"
        ))),
        Retried::NotFound => Err(ApiError::NotFound("job".into())),
    }
}

/// A process is `up` while its heartbeats (every 5 s) are this fresh.
const UP_WITHIN_MS: i64 = 15_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// `{node_id}:{pid}`; its workers' leases start with it.
    pub id: String,
    pub roles: String,
    pub host: String,
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_s: f64,
    /// `up`, or `silent` once no heartbeat came for 15 s (killed, frozen or cut off).
    pub status: String,
    pub jobs_running: u64,
    pub job_slots: u32,
    pub live_sessions: u32,
    pub live_viewers: u64,
    /// The machine's 1-minute load average.
    pub load1: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<NodeView>,
}

/// Every process of the deployment (workers, live encoders, API nodes) from its heartbeats:
/// roles, host, load, running jobs and live sessions, and how long ago it was last heard from.
#[utoipa::path(get, operation_id = "listNodes", path = "/api/v1/admin/nodes",
    responses((status = 200, body = NodeList), (status = 401)))]
pub async fn nodes(State(state): State<AppState>) -> ApiResult<Json<NodeList>> {
    let now = state.clock.now_ms();
    let nodes = state.db.nodes().await?;
    Ok(Json(NodeList {
        nodes: nodes
            .into_iter()
            .map(|n| {
                let age = (now - n.last_seen).max(0);
                NodeView {
                    id: n.beat.id,
                    roles: n.beat.roles,
                    host: n.beat.host,
                    pid: n.beat.pid,
                    version: n.beat.version,
                    started_at: rfc3339(n.beat.started_at),
                    heartbeat_age_s: age as f64 / 1000.0,
                    status: if age <= UP_WITHIN_MS { "up" } else { "silent" }.into(),
                    jobs_running: n.jobs_running,
                    job_slots: n.beat.job_slots,
                    live_sessions: n.beat.live_sessions,
                    live_viewers: n.beat.live_viewers,
                    load1: n.beat.load1,
                }
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HourView {
    /// Start of the hour, epoch ms.
    pub t: i64,
    pub done: u64,
    pub failed: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminStats {
    /// Jobs that ended in each of the last 24 hours, oldest first, the current hour last.
    pub jobs_per_hour: Vec<HourView>,
}

/// Figures for the admin page's charts.
#[utoipa::path(get, operation_id = "adminStats", path = "/api/v1/admin/stats",
    responses((status = 200, body = AdminStats), (status = 401)))]
pub async fn stats(State(state): State<AppState>) -> ApiResult<Json<AdminStats>> {
    const HOUR: i64 = 3_600_000;
    let current = state.clock.now_ms().div_euclid(HOUR) * HOUR;
    let first = current - 23 * HOUR;
    let ended = state.db.job_outcomes_per_hour(first).await?;
    let jobs_per_hour = (0..24)
        .map(|i| {
            let t = first + i * HOUR;
            let (done, failed) = ended
                .iter()
                .find(|h| h.0 == t)
                .map_or((0, 0), |h| (h.1, h.2));
            HourView { t, done, failed }
        })
        .collect();
    Ok(Json(AdminStats { jobs_per_hour }))
}
