//! This process's heartbeat into the shared database, for the admin page's list of workers and
//! live encoders: its roles, host, load, worker slots and live sessions every few seconds, and a
//! goodbye on a clean stop (a killed process simply stops beating and shows its age). Ingest
//! nodes also find the live encoders they relay to here (`relay_addr`).

use std::sync::Arc;
use std::time::Duration;

use oxcast_base::clock::SharedClock;
use oxcast_db::{Db, NodeBeat};
use tokio_util::sync::CancellationToken;

/// How often a process beats.
pub const EVERY: Duration = Duration::from_secs(5);
/// How often a live encoder with a relay listener beats: ingest nodes choose encoders from the
/// heartbeats (`crate::encoders`), so a new encoder is offered, and its live-session count
/// weighed, within this.
pub const RELAY_EVERY: Duration = Duration::from_secs(2);

pub struct Heartbeat {
    pub db: Db,
    pub clock: SharedClock,
    pub beat: NodeBeat,
    pub live: Option<Arc<oxcast_live::LiveManager>>,
    pub every: Duration,
}

impl Heartbeat {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            if let Some(live) = &self.live {
                let (sessions, viewers) = live.load();
                self.beat.live_sessions = sessions;
                self.beat.live_viewers = viewers;
            }
            self.beat.load1 = load1().unwrap_or(0.0);
            if let Err(e) = self.db.node_beat(&self.beat, self.clock.now_ms()).await {
                tracing::debug!(error = %e, "heartbeat not recorded");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if let Err(e) = self.db.node_gone(&self.beat.id).await {
            tracing::debug!(error = %e, "could not remove this node from the list");
        }
    }
}

/// The 1-minute load average (Linux), the figure an operator compares with the core count.
fn load1() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// The machine's name, for telling nodes apart in the list.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn load_and_hostname_are_read_on_linux() {
        let load = super::load1().expect("/proc/loadavg");
        assert!(load >= 0.0);
        assert!(!super::hostname().is_empty());
    }
}
