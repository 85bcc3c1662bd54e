//! The durable job queue.
//!
//! A job is leased, never popped: a worker claims it with a visibility timeout, renews the lease
//! while it works, and marks the outcome at the end. A worker that dies (a killed process, a
//! reclaimed spot instance) simply stops renewing; once its lease expires any worker may claim
//! the job again. Each claim counts an attempt; a job whose attempts are used up is failed with
//! the reason instead of being claimed forever.

use oxcast_base::clock::Millis;
use oxcast_base::{JobId, VideoId};
use sqlx::Row;

use crate::{corrupt, get_id, Backend, Db, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Probe an uploaded video, then transcode, package and publish it whole, or (when it is
    /// longer than a chunk) split it into the jobs below.
    ProcessVideo,
    /// Encode one chunk of a long video for the whole ladder (payload: what to encode).
    EncodeChunk,
    /// Encode the audio of a long video, once for the whole file (no priming at joins).
    EncodeAudio,
    /// Write the manifests over the accepted chunks and publish; enqueued by the last chunk.
    Stitch,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessVideo => "process_video",
            Self::EncodeChunk => "encode_chunk",
            Self::EncodeAudio => "encode_audio",
            Self::Stitch => "stitch",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::ProcessVideo,
            Self::EncodeChunk,
            Self::EncodeAudio,
            Self::Stitch,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A job leased to one worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub video_id: VideoId,
    /// Including this one.
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_owner: String,
    /// Which chunk, for [`JobKind::EncodeChunk`].
    pub chunk: Option<u32>,
    /// What the job must do, as its enqueuer wrote it (JSON); `None` for a whole video.
    pub payload: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Done,
    /// Try again no earlier than `retry_at`, if attempts remain; otherwise fail.
    Retry {
        error: String,
        retry_at: Millis,
    },
    /// The input can never succeed (not a video, over limits): no retry.
    Fatal {
        error: String,
    },
    /// Not the job's fault: the worker is going away (SIGTERM, a spot reclaim notice) or the
    /// database or the bucket is unreachable. The job is leasable again from `retry_at`, and
    /// this attempt does not count against it.
    HandBack {
        reason: String,
        retry_at: Millis,
    },
}

const RUNNABLE: &str =
    "((state = 'queued' AND run_at <= $3) OR (state = 'running' AND lease_expires_at < $3)) \
                        AND attempts < max_attempts";

impl Db {
    /// Leases the oldest runnable job to `owner` until `now + lease_ms`.
    pub async fn claim_job(&self, owner: &str, now: Millis, lease_ms: i64) -> Result<Option<Job>> {
        self.fail_exhausted_jobs(now).await?;
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The outer condition repeats the inner one so that, of two racing claimers, only one
        // matches the row.
        let sql = format!(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2, \
             attempts = attempts + 1, updated_at = $3 \
             WHERE id = (SELECT id FROM jobs WHERE {RUNNABLE} ORDER BY run_at, created_at LIMIT 1{lock}) \
             AND {RUNNABLE} \
             RETURNING id, kind, video_id, attempts, max_attempts, chunk, payload"
        );
        let row = sqlx::query(&sql)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let kind: String = row.try_get("kind")?;
        Ok(Some(Job {
            id: get_id(&row, "id", "jobs")?,
            kind: JobKind::parse(&kind).ok_or_else(|| corrupt("jobs", format!("kind {kind:?}")))?,
            video_id: get_id(&row, "video_id", "jobs")?,
            attempt: row.try_get::<i64, _>("attempts")? as u32,
            max_attempts: row.try_get::<i64, _>("max_attempts")? as u32,
            lease_owner: owner.to_string(),
            chunk: u32::try_from(row.try_get::<i64, _>("chunk")?).ok(),
            payload: row.try_get("payload")?,
        }))
    }

    /// Jobs whose last lease expired with no attempts left are failed, with their videos.
    async fn fail_exhausted_jobs(&self, now: Millis) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE jobs SET state = 'failed', updated_at = $1, \
             last_error = COALESCE(last_error, 'worker lost') || ' (no attempts left)' \
             WHERE state = 'running' AND lease_expires_at < $1 AND attempts >= max_attempts \
             RETURNING video_id, last_error",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for row in &rows {
            let video: String = row.try_get("video_id")?;
            let err: String = row.try_get("last_error")?;
            sqlx::query(
                "UPDATE videos SET status = 'failed', error = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(&video)
            .bind(&err)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // The other chunks of a failed video have nothing left to make.
            crate::chunks::cancel_siblings(&mut tx, &video, &err, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Extends the lease. `false` means the lease was lost (expired and taken by another
    /// worker): the caller must stop and must not publish.
    pub async fn heartbeat_job(&self, job: &Job, now: Millis, lease_ms: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET lease_expires_at = $3, updated_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(job.id.to_string())
        .bind(&job.lease_owner)
        .bind(now + lease_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records the outcome of an attempt. Returns `false` if the lease had been lost.
    pub async fn finish_job(&self, job: &Job, outcome: &JobOutcome, now: Millis) -> Result<bool> {
        if let JobOutcome::HandBack { reason, retry_at } = outcome {
            let r = sqlx::query(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, last_error = $3, \
                 run_at = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
                 WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
            )
            .bind(job.id.to_string())
            .bind(&job.lease_owner)
            .bind(reason)
            .bind(*retry_at)
            .bind(now)
            .execute(&self.pool)
            .await?;
            return Ok(r.rows_affected() == 1);
        }
        let (state, error, run_at) = match outcome {
            JobOutcome::Done => ("done", None, now),
            JobOutcome::Retry { error, retry_at } if job.attempt < job.max_attempts => {
                ("queued", Some(error.as_str()), *retry_at)
            }
            JobOutcome::Retry { error, .. } | JobOutcome::Fatal { error } => {
                ("failed", Some(error.as_str()), now)
            }
            JobOutcome::HandBack { .. } => unreachable!("handled above"),
        };
        let r = sqlx::query(
            "UPDATE jobs SET state = $3, last_error = $4, run_at = $5, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $6 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(job.id.to_string())
        .bind(&job.lease_owner)
        .bind(state)
        .bind(error)
        .bind(run_at)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The publish step: marks the job done and the video ready in one transaction, only if
    /// `job`'s lease is still held. A worker that lost its lease publishes nothing.
    pub async fn publish_video(
        &self,
        job: &Job,
        published: &crate::Published,
        now: Millis,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'done', last_error = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $3 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(job.id.to_string())
        .bind(&job.lease_owner)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        let renditions =
            serde_json::to_string(&published.renditions).expect("renditions serialize");
        sqlx::query(
            "UPDATE videos SET status = 'ready', progress = 1, error = NULL, duration_s = $2, \
             width = $3, height = $4, renditions = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(job.video_id.to_string())
        .bind(published.duration_s)
        .bind(published.width as i64)
        .bind(published.height as i64)
        .bind(renditions)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Makes jobs leased by an earlier incarnation of this node runnable again at once, instead
    /// of waiting out their leases: that process is gone, so nothing renews them.
    pub async fn release_leases_of(&self, owner_prefix: &str, now: Millis) -> Result<u64> {
        let pattern = format!("{}%", owner_prefix.replace(['%', '_'], ""));
        let r = sqlx::query(
            "UPDATE jobs SET state = 'queued', run_at = $2, lease_owner = NULL, lease_expires_at = NULL, \
             last_error = 'worker restarted', updated_at = $2 \
             WHERE state = 'running' AND lease_owner LIKE $1",
        )
        .bind(pattern)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Jobs per state, and the age of the oldest running lease's start (ms), for the queue
    /// gauges.
    pub async fn job_stats(&self, now: Millis) -> Result<(Vec<(String, i64)>, Option<i64>)> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let counts = rows
            .iter()
            .map(|r| Ok((r.try_get::<String, _>("state")?, r.try_get::<i64, _>("n")?)))
            .collect::<Result<Vec<_>>>()?;
        let oldest: Option<i64> =
            sqlx::query_scalar("SELECT MIN(updated_at) FROM jobs WHERE state = 'running'")
                .fetch_one(&self.pool)
                .await?;
        Ok((counts, oldest.map(|t| now - t)))
    }

    /// The last error and attempt count of a video's job, for diagnostics.
    pub async fn job_state(&self, video: VideoId) -> Result<Option<(String, u32, Option<String>)>> {
        let row = sqlx::query(
            "SELECT state, attempts, last_error FROM jobs WHERE video_id = $1 AND kind = 'process_video'",
        )
            .bind(video.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("state")?,
                r.try_get::<i64, _>("attempts")? as u32,
                r.try_get("last_error")?,
            ))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;
    use crate::VideoStatus;

    use crate::testing::queued_video as queued;

    #[tokio::test]
    async fn a_leased_job_is_invisible_until_its_lease_expires() {
        each_backend(|db| async move {
            let video = queued(&db, 3).await;
            let a = db.claim_job("a", 100, 1000).await.unwrap().unwrap();
            assert_eq!((a.video_id, a.attempt), (video, 1));
            assert!(db.claim_job("b", 500, 1000).await.unwrap().is_none());
            // a heartbeats, pushing expiry to 1900
            assert!(db.heartbeat_job(&a, 900, 1000).await.unwrap());
            assert!(db.claim_job("b", 1500, 1000).await.unwrap().is_none());
            // a dies; after expiry b takes over, and a can no longer renew or finish.
            let b = db.claim_job("b", 2000, 1000).await.unwrap().unwrap();
            assert_eq!(b.attempt, 2);
            assert!(!db.heartbeat_job(&a, 2001, 1000).await.unwrap());
            assert!(!db.finish_job(&a, &JobOutcome::Done, 2002).await.unwrap());
            assert!(db.finish_job(&b, &JobOutcome::Done, 2003).await.unwrap());
            assert!(db.claim_job("c", 99_999, 1000).await.unwrap().is_none());
        })
        .await;
    }

    #[tokio::test]
    async fn a_handed_back_job_is_leasable_at_once_and_costs_no_attempt() {
        each_backend(|db| async move {
            queued(&db, 1).await;
            let a = db.claim_job("a", 100, 60_000).await.unwrap().unwrap();
            let back = JobOutcome::HandBack {
                reason: "worker stopping".into(),
                retry_at: 200,
            };
            assert!(db.finish_job(&a, &back, 200).await.unwrap());
            // Long before the lease would have expired, and with its only attempt not spent.
            let b = db.claim_job("b", 201, 60_000).await.unwrap().unwrap();
            assert_eq!(b.attempt, 1);
            // A lost lease cannot hand anything back.
            assert!(!db.finish_job(&a, &back, 300).await.unwrap());
            let (counts, oldest) = db.job_stats(1_201).await.unwrap();
            assert_eq!(counts, vec![("running".to_string(), 1)]);
            assert_eq!(oldest, Some(1_000));
        })
        .await;
    }

    #[tokio::test]
    async fn retries_wait_for_backoff_then_fail_when_attempts_run_out() {
        each_backend(|db| async move {
            let video = queued(&db, 2).await;
            let j = db.claim_job("w", 0, 1000).await.unwrap().unwrap();
            let retry = JobOutcome::Retry {
                error: "boom".into(),
                retry_at: 5000,
            };
            assert!(db.finish_job(&j, &retry, 10).await.unwrap());
            assert!(db.claim_job("w", 4999, 1000).await.unwrap().is_none());
            let j2 = db.claim_job("w", 5000, 1000).await.unwrap().unwrap();
            assert_eq!(j2.attempt, 2);
            assert!(db.finish_job(&j2, &retry, 5001).await.unwrap());
            let (state, attempts, err) = db.job_state(video).await.unwrap().unwrap();
            assert_eq!(
                (state.as_str(), attempts, err.as_deref()),
                ("failed", 2, Some("boom"))
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_expired_last_attempt_fails_the_video() {
        each_backend(|db| async move {
            let video = queued(&db, 1).await;
            let _lost = db.claim_job("w", 0, 1000).await.unwrap().unwrap();
            assert!(db.claim_job("w", 5000, 1000).await.unwrap().is_none());
            let v = db.video(video).await.unwrap().unwrap();
            assert_eq!(v.status, VideoStatus::Failed);
            assert!(v.error.unwrap().contains("no attempts left"));
        })
        .await;
    }

    #[tokio::test]
    async fn restart_releases_own_leases_only() {
        each_backend(|db| async move {
            queued(&db, 3).await;
            queued(&db, 3).await;
            let mine = db
                .claim_job("node1:old:0", 0, 60_000)
                .await
                .unwrap()
                .unwrap();
            let theirs = db.claim_job("node2:x:0", 0, 60_000).await.unwrap().unwrap();
            assert_eq!(db.release_leases_of("node1:", 10).await.unwrap(), 1);
            let again = db
                .claim_job("node1:new:0", 11, 60_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.id, mine.id);
            assert_eq!(again.attempt, 2);
            assert!(db.heartbeat_job(&theirs, 12, 60_000).await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn fatal_outcome_never_retries() {
        each_backend(|db| async move {
            queued(&db, 5).await;
            let j = db.claim_job("w", 0, 1000).await.unwrap().unwrap();
            db.finish_job(
                &j,
                &JobOutcome::Fatal {
                    error: "not a video".into(),
                },
                1,
            )
            .await
            .unwrap();
            assert!(db.claim_job("w", 1_000_000, 1000).await.unwrap().is_none());
        })
        .await;
    }
}
