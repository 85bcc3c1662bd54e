//! Chunked encoding in the queue: a video's processing job splits into one job per chunk plus
//! one for the audio; each is leased, retried and accepted on its own, and the acceptance of the
//! last one enqueues the stitch job that publishes. A dead worker costs its running chunks only.

use oxcast_base::clock::Millis;
use oxcast_base::{JobId, VideoId};
use sqlx::any::Any;
use sqlx::Row;

use crate::jobs::{Job, JobKind};
use crate::{corrupt, Db, Result};

/// A job to enqueue when a video is split.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub kind: JobKind,
    pub chunk: Option<u32>,
    /// What the job must do (JSON), handed back verbatim in [`Job::payload`].
    pub payload: String,
}

/// An accepted job's recorded result.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    pub kind: JobKind,
    pub chunk: Option<u32>,
    pub result: String,
}

/// How a chunked video's chunk jobs stand, for the API and the progress bar.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkCounts {
    pub total: u32,
    pub done: u32,
    pub running: u32,
    pub queued: u32,
    pub failed: u32,
}

/// Fails every job of `video` still waiting or running: a video that failed has nothing left
/// to make, and a running worker finds its lease gone at its next heartbeat.
pub(crate) async fn cancel_siblings(
    tx: &mut sqlx::Transaction<'_, Any>,
    video: &str,
    reason: &str,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'failed', last_error = $2, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = $3 \
         WHERE video_id = $1 AND state IN ('queued', 'running')",
    )
    .bind(video)
    .bind(format!("cancelled: {reason}"))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Db {
    /// Replaces the leased processing `job` by `tasks`, in one transaction: the job is done and
    /// the tasks are queued, or (the lease was lost) nothing changes and this returns `false`.
    pub async fn split_job(&self, job: &Job, tasks: &[NewTask], now: Millis) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'done', last_error = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, progress = 1, updated_at = $3 \
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
        for t in tasks {
            sqlx::query(
                "INSERT INTO jobs (id, kind, video_id, state, attempts, max_attempts, run_at, \
                 chunk, payload, created_at, updated_at) \
                 VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7, $5, $5) \
                 ON CONFLICT (video_id, kind, chunk) DO NOTHING",
            )
            .bind(JobId::new().to_string())
            .bind(t.kind.as_str())
            .bind(job.video_id.to_string())
            .bind(i64::from(job.max_attempts))
            .bind(now)
            .bind(t.chunk.map_or(-1, i64::from))
            .bind(&t.payload)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Accepts the leased chunk or audio `job` with its `result`. If it was the last of its
    /// video's chunk and audio jobs, the stitch job is queued in the same transaction; returns
    /// `Some(stitch_queued)`, or `None` when the lease had been lost (nothing recorded).
    pub async fn accept_task(&self, job: &Job, result: &str, now: Millis) -> Result<Option<bool>> {
        let video = job.video_id.to_string();
        let mut tx = self.pool.begin().await?;
        // Locks the video's row first: two last chunks accepted at once on PostgreSQL take
        // turns here, so the second sees the first done and exactly one queues the stitch.
        sqlx::query("UPDATE videos SET updated_at = $2 WHERE id = $1")
            .bind(&video)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let r = sqlx::query(
            "UPDATE jobs SET state = 'done', result = $3, progress = 1, last_error = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
        )
        .bind(job.id.to_string())
        .bind(&job.lease_owner)
        .bind(result)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(None);
        }
        let stitch = sqlx::query(
            "INSERT INTO jobs (id, kind, video_id, state, attempts, max_attempts, run_at, chunk, \
             created_at, updated_at) \
             SELECT $1, 'stitch', $2, 'queued', 0, $3, $4, -1, $4, $4 \
             WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE video_id = $2 \
               AND kind IN ('encode_chunk', 'encode_audio') AND state <> 'done') \
             ON CONFLICT (video_id, kind, chunk) DO NOTHING",
        )
        .bind(JobId::new().to_string())
        .bind(&video)
        .bind(i64::from(job.max_attempts))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(Some(stitch))
    }

    /// The results of a video's accepted chunk and audio jobs, chunks in order.
    pub async fn task_results(&self, video: VideoId) -> Result<Vec<TaskResult>> {
        let rows = sqlx::query(
            "SELECT kind, chunk, result FROM jobs WHERE video_id = $1 AND state = 'done' \
             AND kind IN ('encode_chunk', 'encode_audio') ORDER BY kind, chunk",
        )
        .bind(video.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(TaskResult {
                    kind: JobKind::parse(&kind)
                        .ok_or_else(|| corrupt("jobs", format!("kind {kind:?}")))?,
                    chunk: u32::try_from(r.try_get::<i64, _>("chunk")?).ok(),
                    result: r
                        .try_get::<Option<String>, _>("result")?
                        .ok_or_else(|| corrupt("jobs", "an accepted job without a result"))?,
                })
            })
            .collect()
    }

    /// Chunk jobs of `video` per state; all zero for a video encoded whole.
    pub async fn chunk_counts(&self, video: VideoId) -> Result<ChunkCounts> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE video_id = $1 AND kind = 'encode_chunk' \
             GROUP BY state",
        )
        .bind(video.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut c = ChunkCounts::default();
        for r in rows {
            let n = r.try_get::<i64, _>("n")? as u32;
            c.total += n;
            match r.try_get::<String, _>("state")?.as_str() {
                "done" => c.done += n,
                "running" => c.running += n,
                "queued" => c.queued += n,
                _ => c.failed += n,
            }
        }
        Ok(c)
    }

    /// Records a chunk job's own progress and moves the video's bar to the average over its
    /// chunks (scaled into `[from, to]`; it never moves back).
    pub async fn set_task_progress(
        &self,
        job: &Job,
        progress: f64,
        from: f64,
        to: f64,
        now: Millis,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE jobs SET progress = $2 WHERE id = $1")
            .bind(job.id.to_string())
            .bind(progress.clamp(0.0, 1.0))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE videos SET status = 'processing', error = NULL, updated_at = $4, \
             progress = (SELECT $2 + ($3 - $2) * COALESCE(AVG(progress), 0) FROM jobs \
                         WHERE video_id = $1 AND kind = 'encode_chunk') \
             WHERE id = $1 AND status IN ('queued', 'processing') \
             AND progress < (SELECT $2 + ($3 - $2) * COALESCE(AVG(progress), 0) FROM jobs \
                             WHERE video_id = $1 AND kind = 'encode_chunk')",
        )
        .bind(job.video_id.to_string())
        .bind(from)
        .bind(to)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fails a video and cancels its other jobs, in one transaction.
    pub async fn fail_video(&self, video: VideoId, error: &str, now: Millis) -> Result<()> {
        let id = video.to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE videos SET status = 'failed', error = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(&id)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        cancel_siblings(&mut tx, &id, error, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;
    use crate::VideoStatus;

    /// A video whose processing job is leased to "planner" and split into `chunks` chunk jobs
    /// and one audio job.
    async fn split(db: &Db, chunks: u32) -> VideoId {
        let video = crate::testing::queued_video(db, 2).await;
        let plan = db.claim_job("planner", 1, 1000).await.unwrap().unwrap();
        assert_eq!(plan.kind, JobKind::ProcessVideo);
        let mut tasks: Vec<NewTask> = (0..chunks)
            .map(|c| NewTask {
                kind: JobKind::EncodeChunk,
                chunk: Some(c),
                payload: format!("{{\"chunk\":{c}}}"),
            })
            .collect();
        tasks.push(NewTask {
            kind: JobKind::EncodeAudio,
            chunk: None,
            payload: "{}".into(),
        });
        assert!(db.split_job(&plan, &tasks, 2).await.unwrap());
        // Splitting twice (a retried call) is refused: the lease is gone with the job.
        assert!(!db.split_job(&plan, &tasks, 3).await.unwrap());
        video
    }

    #[tokio::test]
    async fn the_last_accepted_chunk_queues_one_stitch_and_results_come_back_in_order() {
        each_backend(|db| async move {
            let video = split(&db, 3).await;
            let mut leased = Vec::new();
            for w in 0..4 {
                let j = db
                    .claim_job(&format!("w{w}"), 10, 1000)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(matches!(
                    j.kind,
                    JobKind::EncodeChunk | JobKind::EncodeAudio
                ));
                leased.push(j);
            }
            assert!(db.claim_job("idle", 10, 1000).await.unwrap().is_none());
            let c = db.chunk_counts(video).await.unwrap();
            assert_eq!((c.total, c.running, c.done), (3, 3, 0));
            let chunk1 = leased.iter().find(|j| j.chunk == Some(1)).unwrap();
            assert_eq!(chunk1.payload.as_deref(), Some("{\"chunk\":1}"));
            // Accepted in reverse; only the last one queues the stitch.
            leased.reverse();
            for (i, j) in leased.iter().enumerate() {
                let r = format!("r{:?}", j.chunk);
                let queued = db.accept_task(j, &r, 20).await.unwrap().unwrap();
                assert_eq!(queued, i == leased.len() - 1, "job {i}");
                // A second accept of the same lease records nothing.
                assert_eq!(db.accept_task(j, "again", 21).await.unwrap(), None);
            }
            let stitch = db.claim_job("s", 30, 1000).await.unwrap().unwrap();
            assert_eq!((stitch.kind, stitch.chunk), (JobKind::Stitch, None));
            let results = db.task_results(video).await.unwrap();
            let chunks: Vec<_> = results
                .iter()
                .filter(|r| r.kind == JobKind::EncodeChunk)
                .map(|r| (r.chunk, r.result.as_str()))
                .collect();
            assert_eq!(
                chunks,
                [
                    (Some(0), "rSome(0)"),
                    (Some(1), "rSome(1)"),
                    (Some(2), "rSome(2)")
                ]
            );
            assert!(results.iter().any(|r| r.kind == JobKind::EncodeAudio));
            assert_eq!(db.chunk_counts(video).await.unwrap().done, 3);
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_chunk_is_leased_again_and_only_its_owner_accepts_it() {
        each_backend(|db| async move {
            let video = split(&db, 1).await;
            let a = db.claim_job("a", 10, 100).await.unwrap().unwrap();
            let b_first = db.claim_job("b", 10, 100).await.unwrap().unwrap();
            // a dies; after its lease b's second claim takes a's job over.
            let b = db.claim_job("b2", 200, 100).await.unwrap().unwrap();
            assert_eq!(b.id, a.id);
            assert_eq!(b.attempt, 2);
            assert_eq!(db.accept_task(&a, "late", 210).await.unwrap(), None);
            assert_eq!(
                db.accept_task(&b_first, "x", 210).await.unwrap(),
                Some(false)
            );
            assert_eq!(db.accept_task(&b, "y", 210).await.unwrap(), Some(true));
            let r = db.task_results(video).await.unwrap();
            assert!(r.iter().any(|t| t.result == "y") && !r.iter().any(|t| t.result == "late"));
        })
        .await;
    }

    #[tokio::test]
    async fn a_failed_video_cancels_its_other_chunks() {
        each_backend(|db| async move {
            let video = split(&db, 3).await;
            let running = db.claim_job("a", 10, 1000).await.unwrap().unwrap();
            db.fail_video(video, "chunk 0 failed", 20).await.unwrap();
            assert_eq!(
                db.video(video).await.unwrap().unwrap().status,
                VideoStatus::Failed
            );
            assert!(db.claim_job("b", 30, 1000).await.unwrap().is_none());
            // The running worker's heartbeat tells it to stop.
            assert!(!db.heartbeat_job(&running, 30, 1000).await.unwrap());
            assert_eq!(db.chunk_counts(video).await.unwrap().failed, 3);
        })
        .await;
    }

    #[tokio::test]
    async fn retrying_a_failed_chunk_starts_the_video_over_from_its_split() {
        each_backend(|db| async move {
            let video = split(&db, 2).await;
            let chunk = db.claim_job("a", 10, 1000).await.unwrap().unwrap();
            db.fail_video(video, "chunk failed", 20).await.unwrap();
            let crate::admin::Retried::Queued(again) = db.retry_job(chunk.id, 30).await.unwrap()
            else {
                panic!("not requeued");
            };
            assert_eq!(again.kind, "process_video");
            assert_eq!(
                db.chunk_counts(video).await.unwrap(),
                ChunkCounts::default()
            );
            assert_eq!(
                db.video(video).await.unwrap().unwrap().status,
                VideoStatus::Queued
            );
            let j = db.claim_job("b", 40, 1000).await.unwrap().unwrap();
            assert_eq!((j.kind, j.video_id), (JobKind::ProcessVideo, video));
        })
        .await;
    }

    #[tokio::test]
    async fn the_video_bar_is_the_average_over_chunks_and_never_moves_back() {
        each_backend(|db| async move {
            let video = split(&db, 2).await;
            let a = db.claim_job("a", 10, 1000).await.unwrap().unwrap();
            db.set_task_progress(&a, 0.5, 0.0, 1.0, 11).await.unwrap();
            let p = db.video(video).await.unwrap().unwrap().progress;
            assert!((p - 0.25).abs() < 1e-9, "{p}");
            db.set_task_progress(&a, 0.1, 0.0, 1.0, 12).await.unwrap();
            let p = db.video(video).await.unwrap().unwrap().progress;
            assert!((p - 0.25).abs() < 1e-9, "{p}");
        })
        .await;
    }

    #[tokio::test]
    async fn two_last_chunks_accepted_at_once_queue_exactly_one_stitch() {
        each_backend(|db| async move {
            for round in 0..5 {
                let video = split(&db, 2).await;
                let mut leased = Vec::new();
                while let Some(j) = db.claim_job(&format!("w{round}"), 10, 1000).await.unwrap() {
                    // Earlier rounds' stitch jobs are in the queue too.
                    if j.video_id == video {
                        leased.push(j);
                    }
                }
                assert_eq!(leased.len(), 3);
                let audio = leased
                    .iter()
                    .position(|j| j.kind == JobKind::EncodeAudio)
                    .unwrap();
                let audio = leased.remove(audio);
                db.accept_task(&audio, "a", 11).await.unwrap().unwrap();
                let mut racers = tokio::task::JoinSet::new();
                for j in leased {
                    let db = db.clone();
                    racers
                        .spawn(async move { db.accept_task(&j, "c", 12).await.unwrap().unwrap() });
                }
                let mut stitches = 0;
                while let Some(r) = racers.join_next().await {
                    stitches += usize::from(r.unwrap());
                }
                assert_eq!(stitches, 1, "round {round}");
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE video_id = $1 AND kind = 'stitch'",
                )
                .bind(video.to_string())
                .fetch_one(db.pool())
                .await
                .unwrap();
                assert_eq!(n, 1);
            }
        })
        .await;
    }
}
