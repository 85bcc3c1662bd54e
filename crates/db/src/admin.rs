//! The operator's view of the job queue: jobs listed with their videos, and a failed job put
//! back in the queue.

use std::fmt;
use std::str::FromStr;

use oxcast_base::clock::Millis;
use oxcast_base::JobId;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{corrupt, get_id, Db, Result};

/// Where a job stands in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => {
                return Err(format!(
                    "job state {s:?}: expected queued, running, done or failed"
                ))
            }
        })
    }
}

/// A job as the admin page shows it, with its video's title and progress.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminJob {
    pub id: JobId,
    pub video_id: oxcast_base::VideoId,
    pub title: String,
    /// `process_video`, `encode_chunk`, `encode_audio` or `stitch`.
    pub kind: String,
    /// Which chunk, for a chunk job.
    pub chunk: Option<u32>,
    pub state: JobState,
    /// Claims so far (the running one included); reset by a retry.
    pub attempts: u32,
    pub max_attempts: u32,
    /// The video's processing progress, 0 to 1.
    pub progress: f64,
    /// The worker holding the lease (`node:pid:slot`), while running.
    pub lease_owner: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What [`Db::retry_job`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Retried {
    /// Back in the queue, attempts reset; the job as it is now.
    Queued(AdminJob),
    /// Only failed jobs can be retried.
    NotFailed(JobState),
    NotFound,
}

const SELECT: &str = "SELECT j.id, j.video_id, v.title, j.kind, j.chunk, j.state, j.attempts, \
                      j.max_attempts, v.progress, j.lease_owner, j.last_error, j.created_at, j.updated_at \
                      FROM jobs j JOIN videos v ON v.id = j.video_id";

fn admin_job(row: &AnyRow) -> Result<AdminJob> {
    let state: String = row.try_get("state")?;
    Ok(AdminJob {
        id: get_id(row, "id", "jobs")?,
        video_id: get_id(row, "video_id", "jobs")?,
        title: row.try_get("title")?,
        kind: row.try_get("kind")?,
        chunk: u32::try_from(row.try_get::<i64, _>("chunk")?).ok(),
        state: state.parse().map_err(|e| corrupt("jobs", e))?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
        progress: row.try_get("progress")?,
        lease_owner: row.try_get("lease_owner")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Db {
    /// Jobs in `state` (all when `None`), most recently changed first, at most `limit`.
    pub async fn admin_jobs(&self, state: Option<JobState>, limit: i64) -> Result<Vec<AdminJob>> {
        let rows = match state {
            Some(s) => {
                sqlx::query(&format!(
                    "{SELECT} WHERE j.state = $1 ORDER BY j.updated_at DESC, j.id LIMIT $2"
                ))
                .bind(s.as_str())
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "{SELECT} ORDER BY j.updated_at DESC, j.id LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(admin_job).collect()
    }

    /// Jobs that ended since `since`, per hour: `(hour start, done, failed)`, oldest first,
    /// only the hours that had any. A chunked video's chunks count one job each.
    pub async fn job_outcomes_per_hour(&self, since: Millis) -> Result<Vec<(Millis, u64, u64)>> {
        let rows = sqlx::query(
            "SELECT updated_at / 3600000 AS h, state, COUNT(*) AS n FROM jobs \
             WHERE state IN ('done', 'failed') AND updated_at >= $1 GROUP BY h, state ORDER BY h",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(Millis, u64, u64)> = Vec::new();
        for r in &rows {
            let hour: i64 = r.try_get("h")?;
            let n = r.try_get::<i64, _>("n")?.max(0) as u64;
            let state: String = r.try_get("state")?;
            let t = hour * 3_600_000;
            if out.last().is_none_or(|l| l.0 != t) {
                out.push((t, 0, 0));
            }
            let last = out.last_mut().expect("pushed");
            if state == "done" {
                last.1 += n;
            } else {
                last.2 += n;
            }
        }
        Ok(out)
    }

    pub async fn admin_job(&self, id: JobId) -> Result<Option<AdminJob>> {
        let row = sqlx::query(&format!("{SELECT} WHERE j.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(admin_job).transpose()
    }

    /// Puts a failed job back in the queue, runnable at once with its attempts reset, and its
    /// video back to `queued`, in one transaction. Any other state is left alone.
    ///
    /// A chunked video is retried whole: a failed chunk, audio or stitch job puts the video's
    /// processing job back (it splits the video again into fresh jobs) and its other jobs go;
    /// the returned job is then that processing job.
    pub async fn retry_job(&self, id: JobId, now: Millis) -> Result<Retried> {
        let mut tx = self.pool.begin().await?;
        let part_of: Option<(String, String)> = sqlx::query(
            "SELECT video_id, kind FROM jobs WHERE id = $1 AND state = 'failed' \
             AND kind <> 'process_video'",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| Ok::<_, crate::Error>((r.try_get("video_id")?, r.try_get("kind")?)))
        .transpose()?;
        let mut id = id;
        if let Some((video, _)) = &part_of {
            sqlx::query("DELETE FROM jobs WHERE video_id = $1 AND kind <> 'process_video'")
                .bind(video)
                .execute(&mut *tx)
                .await?;
            let process: Option<String> = sqlx::query_scalar(
                "UPDATE jobs SET state = 'failed' WHERE video_id = $1 AND kind = 'process_video' \
                 RETURNING id",
            )
            .bind(video)
            .fetch_optional(&mut *tx)
            .await?;
            id = process
                .ok_or_else(|| {
                    corrupt(
                        "jobs",
                        format!("video {video} has chunks but no processing job"),
                    )
                })?
                .parse()
                .map_err(|e| corrupt("jobs", e))?;
        }
        let video: Option<String> = sqlx::query_scalar(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
             WHERE id = $1 AND state = 'failed' RETURNING video_id",
        )
        .bind(id.to_string())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(video) = video else {
            tx.rollback().await?;
            return Ok(match self.admin_job(id).await? {
                Some(job) => Retried::NotFailed(job.state),
                None => Retried::NotFound,
            });
        };
        sqlx::query(
            "UPDATE videos SET status = 'queued', progress = 0, error = NULL, updated_at = $2 \
             WHERE id = $1",
        )
        .bind(video)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let job = self
            .admin_job(id)
            .await?
            .ok_or_else(|| corrupt("jobs", format!("job {id} vanished after its retry")))?;
        Ok(Retried::Queued(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;
    use crate::uploads::NewUpload;
    use crate::{JobOutcome, UploadPart, VideoStatus};

    /// A video titled `title` with a completed upload and one job queued at `at`.
    async fn queued(db: &Db, title: &str, max_attempts: u32, at: Millis) -> oxcast_base::VideoId {
        let new = NewUpload {
            title,
            filename: "f.mp4",
            size: 1,
            part_size: 1,
            expires_at: 9,
        };
        let (v, up) = db.create_upload(&new, at).await.unwrap();
        let part = UploadPart {
            part_number: 1,
            size: 1,
            etag: "e".into(),
            object: None,
        };
        db.put_part(up.id, &part, at).await.unwrap();
        db.complete_upload(up.id, &[(1, "e".into())], max_attempts, at)
            .await
            .unwrap()
            .unwrap();
        v.id
    }

    #[test]
    fn job_states_round_trip_and_unknown_ones_are_refused() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Done,
            JobState::Failed,
        ] {
            assert_eq!(s.as_str().parse::<JobState>(), Ok(s));
        }
        let e = "lost".parse::<JobState>().unwrap_err();
        assert!(
            e.contains("\"lost\"") && e.contains("queued, running"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn ended_jobs_are_counted_per_hour() {
        const H: Millis = 3_600_000;
        each_backend(|db| async move {
            let mut ids = Vec::new();
            for i in 0..4 {
                ids.push(queued(&db, &format!("v{i}"), 1, 0).await);
            }
            let fatal = JobOutcome::Fatal {
                error: "not a video".into(),
            };
            // Hour 1: one done, one failed; hour 3: one done; one still running.
            for (at, outcome) in [
                (H + 10, JobOutcome::Done),
                (H + 20, fatal.clone()),
                (3 * H + 5, JobOutcome::Done),
            ] {
                let j = db
                    .claim_job("n:1:0", at - 1, 60_000)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(db.finish_job(&j, &outcome, at).await.unwrap());
            }
            db.claim_job("n:1:0", 3 * H + 6, 60_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                db.job_outcomes_per_hour(0).await.unwrap(),
                [(H, 1, 1), (3 * H, 1, 0)]
            );
            assert_eq!(
                db.job_outcomes_per_hour(2 * H).await.unwrap(),
                [(3 * H, 1, 0)]
            );
        })
        .await;
    }

    #[tokio::test]
    async fn jobs_are_listed_per_state_with_their_video_worker_and_error() {
        each_backend(|db| async move {
            let a = queued(&db, "<b>A</b>", 3, 0).await;
            let b = queued(&db, "B", 3, 1).await;
            let c = queued(&db, "C", 1, 2).await;
            // a runs (claimed first: oldest), b fails for good, c waits.
            let ja = db.claim_job("node:1:0", 10, 60_000).await.unwrap().unwrap();
            assert_eq!(ja.video_id, a);
            db.set_video_processing(a, 0.25, 20).await.unwrap();
            let jb = db.claim_job("node:1:1", 30, 60_000).await.unwrap().unwrap();
            assert_eq!(jb.video_id, b);
            let fatal = JobOutcome::Fatal {
                error: "not a video".into(),
            };
            assert!(db.finish_job(&jb, &fatal, 40).await.unwrap());

            let running = db.admin_jobs(Some(JobState::Running), 10).await.unwrap();
            assert_eq!(running.len(), 1);
            let r = &running[0];
            assert_eq!(
                (
                    r.id,
                    r.title.as_str(),
                    r.state,
                    r.attempts,
                    r.progress,
                    r.lease_owner.as_deref()
                ),
                (
                    ja.id,
                    "<b>A</b>",
                    JobState::Running,
                    1,
                    0.25,
                    Some("node:1:0")
                )
            );
            let failed = db.admin_jobs(Some(JobState::Failed), 10).await.unwrap();
            assert_eq!(failed.len(), 1);
            assert_eq!(
                (
                    failed[0].video_id,
                    failed[0].last_error.as_deref(),
                    failed[0].lease_owner.as_deref(),
                    failed[0].updated_at
                ),
                (b, Some("not a video"), None, 40)
            );
            let waiting = db.admin_jobs(Some(JobState::Queued), 10).await.unwrap();
            assert_eq!(waiting.iter().map(|j| j.video_id).collect::<Vec<_>>(), [c]);
            assert!(db
                .admin_jobs(Some(JobState::Done), 10)
                .await
                .unwrap()
                .is_empty());
            // All of them, most recently changed first; the limit holds.
            let all = db.admin_jobs(None, 10).await.unwrap();
            assert_eq!(
                all.iter().map(|j| j.video_id).collect::<Vec<_>>(),
                [b, a, c]
            );
            assert_eq!(db.admin_jobs(None, 2).await.unwrap().len(), 2);
        })
        .await;
    }

    #[tokio::test]
    async fn a_failed_job_is_requeued_with_attempts_reset_and_runs_again() {
        each_backend(|db| async move {
            let v = queued(&db, "v", 2, 0).await;
            let retry = JobOutcome::Retry {
                error: "boom".into(),
                retry_at: 0,
            };
            for t in [10, 20] {
                let j = db.claim_job("w", t, 1000).await.unwrap().unwrap();
                assert!(db.finish_job(&j, &retry, t + 1).await.unwrap());
            }
            db.set_video_failed(v, "boom", 21).await.unwrap();
            let id = db.admin_jobs(None, 1).await.unwrap()[0].id;
            assert!(db.claim_job("w", 30, 1000).await.unwrap().is_none());

            let Retried::Queued(job) = db.retry_job(id, 100).await.unwrap() else {
                panic!("a failed job is retried");
            };
            assert_eq!(
                (job.state, job.attempts, job.last_error, job.updated_at),
                (JobState::Queued, 0, None, 100)
            );
            let video = db.video(v).await.unwrap().unwrap();
            assert_eq!(
                (video.status, video.progress, video.error),
                (VideoStatus::Queued, 0.0, None)
            );
            // Runnable at once, with its full count of attempts again.
            let j = db.claim_job("w", 101, 1000).await.unwrap().unwrap();
            assert_eq!((j.id, j.attempt, j.max_attempts), (id, 1, 2));

            // Not failed (running now): left alone.
            assert_eq!(
                db.retry_job(id, 102).await.unwrap(),
                Retried::NotFailed(JobState::Running)
            );
            let still = db.admin_job(id).await.unwrap().unwrap();
            assert_eq!((still.state, still.attempts), (JobState::Running, 1));
            assert_eq!(
                db.retry_job(JobId::new(), 103).await.unwrap(),
                Retried::NotFound
            );
        })
        .await;
    }
}
