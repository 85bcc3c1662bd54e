//! The worker loop: lease, run with a lease keeper, record the outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oxcast_base::clock::SharedClock;
use oxcast_base::Config;
use oxcast_db::{Db, Job, JobKind, JobOutcome};
use oxcast_store::{keys, Store};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{chunked, pipeline, Error};

/// Everything a worker needs, passed in so tests and other processes can build their own.
pub struct WorkerContext {
    pub db: Db,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    /// Stable per machine/data dir: leases are owned by `{node_id}:{pid}:{n}`, so a restarted
    /// node can recognise and release the leases of its previous incarnation.
    pub node_id: String,
    /// Local scratch space for sources and encoder outputs.
    pub scratch: PathBuf,
    /// Notified when work is enqueued, so idle workers start at once instead of at next poll.
    pub wake: Arc<Notify>,
}

impl WorkerContext {
    pub fn owner_prefix(&self) -> String {
        format!("{}:", self.node_id)
    }
}

/// Job progress shared between the pipeline and the lease keeper; only moves forward.
#[derive(Default)]
pub(crate) struct Progress(AtomicU64);

impl Progress {
    pub(crate) fn set(&self, f: f64) {
        let f = f.clamp(0.0, 1.0);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (f > f64::from_bits(cur)).then_some(f.to_bits())
            });
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Starts `config.worker.concurrency` workers; they stop when `shutdown` is cancelled, handing
/// any job in progress back to the queue.
pub fn run_workers(ctx: Arc<WorkerContext>, shutdown: CancellationToken) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for n in 0..ctx.config.worker.concurrency {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        set.spawn(async move { worker_loop(ctx, n, shutdown).await });
    }
    set
}

async fn worker_loop(ctx: Arc<WorkerContext>, n: usize, shutdown: CancellationToken) {
    let owner = format!("{}{}:{}", ctx.owner_prefix(), std::process::id(), n);
    let lease_ms = (ctx.config.worker.lease_s * 1000) as i64;
    let poll = Duration::from_millis(ctx.config.worker.poll_ms.max(10));
    tracing::info!(%owner, "worker started");
    while !shutdown.is_cancelled() {
        match ctx.db.claim_job(&owner, ctx.clock.now_ms(), lease_ms).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", video = %job.video_id, job = %job.id, attempt = job.attempt);
                run_job(&ctx, job, &shutdown).instrument(span).await;
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(poll) => {}
                    _ = ctx.wake.notified() => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = tokio::time::sleep(poll * 4) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    tracing::info!(%owner, "worker stopped");
}

async fn run_job(ctx: &Arc<WorkerContext>, job: Job, shutdown: &CancellationToken) {
    let started = Instant::now();
    tracing::info!("processing");
    let now = ctx.clock.now_ms();
    // A chunk, the audio or the stitch is one of several jobs: the bar is theirs together.
    let whole = job.kind == JobKind::ProcessVideo;
    if whole {
        if let Err(e) = ctx.db.set_video_processing(job.video_id, 0.0, now).await {
            tracing::warn!(error = %e, "could not mark video processing");
        }
    }
    let work = ctx.scratch.join(job.id.to_string());
    let _ = tokio::fs::remove_dir_all(&work).await;
    let progress = Arc::new(Progress::default());
    let lease_lost = CancellationToken::new();
    let deleted = CancellationToken::new();
    let keeper = tokio::spawn(keep_lease(
        ctx.clone(),
        job.clone(),
        progress.clone(),
        lease_lost.clone(),
        deleted.clone(),
    ));

    let result = match tokio::fs::create_dir_all(&work).await {
        Err(e) => Err(Error::Io(e)),
        Ok(()) => tokio::select! {
            r = run_step(ctx, &job, &work, &progress) => r,
            _ = lease_lost.cancelled() => Err(Error::LeaseLost),
            _ = deleted.cancelled() => Err(Error::VideoDeleted),
            _ = shutdown.cancelled() => Err(Error::Shutdown),
        },
    };
    keeper.abort();
    let _ = keeper.await;
    let _ = tokio::fs::remove_dir_all(&work).await;
    let now = ctx.clock.now_ms();
    let secs = started.elapsed().as_secs_f64();

    let outcome = match result {
        Ok(Finished::Split(tasks)) => match ctx.db.split_job(&job, &tasks, now).await {
            Ok(true) => {
                tracing::info!(secs, jobs = tasks.len(), "split into chunks");
                metrics::counter!("oxcast_jobs_total", "outcome" => "split").increment(1);
                ctx.wake.notify_waiters();
                return;
            }
            Ok(false) => {
                tracing::warn!("lease lost before splitting; another worker owns the job");
                return;
            }
            Err(e) => JobOutcome::Retry {
                error: format!("queueing the chunks failed: {e}"),
                retry_at: now + backoff_ms(job.attempt),
            },
        },
        Ok(Finished::Accepted(result)) => match ctx.db.accept_task(&job, &result, now).await {
            Ok(Some(stitch)) => {
                tracing::info!(secs, stitch, "accepted");
                metrics::counter!("oxcast_jobs_total", "outcome" => "done").increment(1);
                metrics::histogram!("oxcast_job_seconds").record(secs);
                if stitch {
                    ctx.wake.notify_waiters();
                }
                return;
            }
            Ok(None) => {
                tracing::warn!("lease lost before acceptance; another worker owns the job");
                return;
            }
            Err(e) => JobOutcome::Retry {
                error: format!("recording the result failed: {e}"),
                retry_at: now + backoff_ms(job.attempt),
            },
        },
        Ok(Finished::Published(published)) => {
            match ctx.db.publish_video(&job, &published, now).await {
                Ok(true) => {
                    tracing::info!(secs, renditions = published.renditions.len(), "published");
                    metrics::counter!("oxcast_jobs_total", "outcome" => "done").increment(1);
                    metrics::histogram!("oxcast_job_seconds").record(secs);
                    return;
                }
                Ok(false) => {
                    if let Ok(None) = ctx.db.video(job.video_id).await {
                        let removed = ctx
                            .store
                            .delete_prefix(&keys::video_prefix(job.video_id))
                            .await
                            .unwrap_or(0);
                        tracing::info!(removed, "video deleted while publishing; outputs removed");
                    } else {
                        tracing::warn!("lease lost before publishing; another worker owns the job");
                    }
                    return;
                }
                Err(e) => JobOutcome::Retry {
                    error: format!("publishing failed: {e}"),
                    retry_at: now + backoff_ms(job.attempt),
                },
            }
        }
        Err(Error::LeaseLost) => {
            tracing::warn!("lease lost; attempt abandoned");
            chunked::discard_attempt(ctx, &job).await;
            metrics::counter!("oxcast_jobs_total", "outcome" => "lease_lost").increment(1);
            return;
        }
        Err(Error::VideoDeleted) => {
            // ffmpeg is gone with the pipeline; what it stored goes too. A store write that was
            // already under way can land just after the first pass, hence the second; anything
            // later still is the reconciler's.
            let prefix = keys::video_prefix(job.video_id);
            let mut removed = 0;
            for pass in 0..2 {
                if pass > 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                match ctx.store.delete_prefix(&prefix).await {
                    Ok(n) => removed += n,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not remove the outputs of a deleted video")
                    }
                }
            }
            tracing::info!(
                removed,
                "video deleted during processing; encode stopped and outputs removed"
            );
            metrics::counter!("oxcast_jobs_total", "outcome" => "deleted").increment(1);
            return;
        }
        Err(Error::Shutdown) => {
            // SIGTERM (a spot reclaim notice): ffmpeg is gone with the pipeline; hand the job
            // back so another worker starts it now rather than after the visibility timeout.
            let back = JobOutcome::HandBack {
                reason: "worker stopped; handed back".into(),
                retry_at: now,
            };
            if whole {
                let _ = ctx
                    .db
                    .set_video_queued(
                        job.video_id,
                        "waiting for a worker (the last one stopped)",
                        now,
                    )
                    .await;
            }
            match ctx.db.finish_job(&job, &back, now).await {
                Ok(true) => tracing::info!(secs, "shutting down: job handed back"),
                Ok(false) => tracing::warn!("shutting down: the lease was already lost"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not hand the job back; its lease will expire")
                }
            }
            metrics::counter!("oxcast_jobs_total", "outcome" => "handed_back").increment(1);
            return;
        }
        Err(e) if e.is_outage() => {
            // The database or the bucket is away (a restart, a network cut): try again later
            // without spending an attempt, so an outage longer than the retries cannot fail a
            // good video. Nothing was published; the retry starts clean.
            let retry_at = now + outage_backoff_ms(job.attempt);
            tracing::warn!(error = %e, secs, retry_in_ms = retry_at - now, "engine unavailable; job handed back");
            let reason = format!("waiting for storage or database: {e}");
            if whole {
                let _ = ctx.db.set_video_queued(job.video_id, &reason, now).await;
            }
            let back = JobOutcome::HandBack { reason, retry_at };
            if let Err(e) = ctx.db.finish_job(&job, &back, now).await {
                tracing::warn!(error = %e, "could not hand the job back; its lease will expire");
            }
            metrics::counter!("oxcast_jobs_total", "outcome" => "outage").increment(1);
            return;
        }
        Err(e) if !e.is_retryable() => JobOutcome::Fatal {
            error: e.to_string(),
        },
        Err(e) => JobOutcome::Retry {
            error: e.to_string(),
            retry_at: now + backoff_ms(job.attempt),
        },
    };
    let (error, final_failure) = match &outcome {
        JobOutcome::Fatal { error } => (error.clone(), true),
        JobOutcome::Retry { error, .. } => (error.clone(), job.attempt >= job.max_attempts),
        JobOutcome::Done | JobOutcome::HandBack { .. } => unreachable!(),
    };
    tracing::warn!(%error, final_failure, secs, "attempt failed");
    metrics::counter!("oxcast_jobs_total", "outcome" => if final_failure { "failed" } else { "retry" })
        .increment(1);
    match ctx.db.finish_job(&job, &outcome, now).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::error!(error = %e, "recording the job outcome failed; the lease will expire");
            return;
        }
    }
    let recorded = if final_failure {
        // Nothing half-made stays behind a failed video.
        if let Err(e) = ctx
            .store
            .delete_prefix(&keys::video_prefix(job.video_id))
            .await
        {
            tracing::warn!(error = %e, "could not remove partial outputs");
        }
        // With its other jobs: a video one chunk of which cannot be made is failed.
        ctx.db.fail_video(job.video_id, &error, now).await
    } else if whole {
        ctx.db
            .set_video_queued(
                job.video_id,
                &format!("attempt {} failed: {error}; retrying", job.attempt),
                now,
            )
            .await
    } else {
        Ok(())
    };
    if let Err(e) = recorded {
        tracing::error!(error = %e, "could not record the video's state");
    }
}

/// How a step ended well.
enum Finished {
    /// The video is made: publish it.
    Published(oxcast_db::Published),
    /// The video is long: these jobs make it.
    Split(Vec<oxcast_db::NewTask>),
    /// A chunk or the audio is made and checked: record its result.
    Accepted(String),
}

async fn run_step(
    ctx: &WorkerContext,
    job: &Job,
    work: &std::path::Path,
    progress: &Arc<Progress>,
) -> crate::Result<Finished> {
    Ok(match job.kind {
        JobKind::ProcessVideo => match pipeline::process(ctx, job, work, progress).await? {
            pipeline::Processed::Published(p) => Finished::Published(p),
            pipeline::Processed::Split(t) => Finished::Split(t),
        },
        JobKind::EncodeChunk => {
            Finished::Accepted(chunked::encode_chunk(ctx, job, work, progress).await?)
        }
        JobKind::EncodeAudio => {
            Finished::Accepted(chunked::encode_audio(ctx, job, work, progress).await?)
        }
        JobKind::Stitch => Finished::Published(chunked::stitch(ctx, job, work, progress).await?),
    })
}

/// After an outage: 1 s, 2 s, 4 s, … capped at 30 s, so work resumes soon after the engine is
/// back.
fn outage_backoff_ms(attempt: u32) -> i64 {
    (1_000i64 << attempt.saturating_sub(1).min(5)).min(30_000)
}

/// 2 s, 8 s, 32 s, … capped at 5 minutes.
fn backoff_ms(attempt: u32) -> i64 {
    (2_000i64 << (2 * attempt.saturating_sub(1)).min(20)).min(300_000)
}

/// Renews the lease every third of its length, writes progress, and watches for the video's
/// deletion (each tick, so an encode of a deleted video stops within about half a second).
async fn keep_lease(
    ctx: Arc<WorkerContext>,
    job: Job,
    progress: Arc<Progress>,
    lost: CancellationToken,
    deleted: CancellationToken,
) {
    let lease_ms = (ctx.config.worker.lease_s * 1000) as i64;
    let renew_every = Duration::from_millis((lease_ms / 3).max(100) as u64);
    let mut last_renew = Instant::now();
    let mut last_progress = -1.0;
    let mut tick = tokio::time::interval(Duration::from_millis(
        500.min(renew_every.as_millis() as u64),
    ));
    loop {
        tick.tick().await;
        let now = ctx.clock.now_ms();
        if let Ok(None) = ctx.db.video(job.video_id).await {
            deleted.cancel();
            return;
        }
        if last_renew.elapsed() >= renew_every {
            match ctx.db.heartbeat_job(&job, now, lease_ms).await {
                Ok(true) => last_renew = Instant::now(),
                Ok(false) => {
                    if let Ok(None) = ctx.db.video(job.video_id).await {
                        deleted.cancel();
                    } else {
                        lost.cancel();
                    }
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; will retry"),
            }
        }
        let p = progress.get();
        if (p - last_progress).abs() >= 0.005 {
            let recorded = match job.kind {
                JobKind::ProcessVideo => ctx.db.set_video_processing(job.video_id, p, now).await,
                // The bar: 2% for the split, 95% spread over the chunks, the rest the stitch.
                JobKind::EncodeChunk => ctx.db.set_task_progress(&job, p, 0.02, 0.97, now).await,
                JobKind::EncodeAudio | JobKind::Stitch => Ok(()),
            };
            if recorded.is_ok() {
                last_progress = p;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_ms(1), 2_000);
        assert_eq!(backoff_ms(2), 8_000);
        assert_eq!(backoff_ms(3), 32_000);
        assert_eq!(backoff_ms(30), 300_000);
    }

    #[test]
    fn outage_backoff_is_short_and_capped() {
        assert_eq!(outage_backoff_ms(1), 1_000);
        assert_eq!(outage_backoff_ms(3), 4_000);
        assert_eq!(outage_backoff_ms(50), 30_000);
    }

    #[test]
    fn progress_only_moves_forward() {
        let p = Progress::default();
        p.set(0.5);
        p.set(0.2);
        assert_eq!(p.get(), 0.5);
        p.set(2.0);
        assert_eq!(p.get(), 1.0);
    }
}
