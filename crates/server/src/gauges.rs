//! Queue gauges, sampled from the database: what any process of a deployment can report, so
//! the dashboards work whichever role a scrape reaches.

use std::time::Duration;

use oxcast_base::clock::SharedClock;
use oxcast_db::Db;
use tokio_util::sync::CancellationToken;

const STATES: [&str; 4] = ["queued", "running", "done", "failed"];

/// Every `every`, sets `oxcast_jobs{state}` and `oxcast_job_oldest_running_seconds`.
pub async fn sample_queue(
    db: Db,
    clock: SharedClock,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match db.job_stats(clock.now_ms()).await {
            Ok((counts, oldest)) => {
                for state in STATES {
                    let n = counts
                        .iter()
                        .find(|(s, _)| s == state)
                        .map_or(0, |(_, n)| *n);
                    metrics::gauge!("oxcast_jobs", "state" => state).set(n as f64);
                }
                metrics::gauge!("oxcast_job_oldest_running_seconds")
                    .set(oldest.unwrap_or(0) as f64 / 1000.0);
            }
            Err(e) => tracing::debug!(error = %e, "sampling the queue failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
