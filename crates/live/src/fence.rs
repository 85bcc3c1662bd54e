//! Fencing a session's writes with its stream lease, where another encoder may take the stream
//! over (a deployment whose ingest nodes relay publishers to encoders).
//!
//! An ingest that stops hearing from its encoder (the machine froze, the network split) hands
//! the stream to another encoder, which may take the lease over once the old holder has not
//! renewed it for [`TAKEOVER_AFTER_MS`]. The old encoder must be silent by then, whenever it
//! wakes: its object writer writes only while its last successful renewal, counted from when
//! it was *sent*, is younger than [`WRITE_FOR`], which is well inside the takeover wait. A
//! renewal that finds the lease gone fences the session for good. A writer that is merely
//! stale (the database is slow) waits rather than drops: nobody can take the stream over
//! without the database either.
//!
//! On one machine (no relay) nothing can take a stream over while its node runs, and a session
//! is never fenced: a slow database must not hold up the live edge.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often a fenced session renews its lease.
pub(crate) const RENEW_EVERY: Duration = Duration::from_millis(400);
/// How long after a renewal was sent its session may write.
pub(crate) const WRITE_FOR: Duration = Duration::from_millis(1200);
/// How long a holder the ingest lost (but whose connection did not close) must have failed to
/// renew before another encoder takes its stream: [`WRITE_FOR`] plus most of a second for a
/// write that was already under way.
pub(crate) const TAKEOVER_AFTER_MS: i64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Never fenced.
    Open,
    /// May write until then.
    Until(Instant),
    /// The lease went to another node: nothing more is written.
    Lost,
}

#[derive(Clone)]
pub(crate) struct Fence(Arc<watch::Sender<State>>);

impl Fence {
    /// A session that is never fenced.
    pub(crate) fn open() -> Self {
        Self(Arc::new(watch::channel(State::Open).0))
    }

    /// A session whose lease was taken (or renewed) by a request sent at `sent`.
    pub(crate) fn leased(sent: Instant) -> Self {
        Self(Arc::new(watch::channel(State::Until(sent + WRITE_FOR)).0))
    }

    pub(crate) fn is_fenced(&self) -> bool {
        !matches!(*self.0.borrow(), State::Open)
    }

    /// A renewal sent at `sent` succeeded.
    pub(crate) fn renewed(&self, sent: Instant) {
        self.0.send_if_modified(|s| match *s {
            State::Until(t) if t < sent + WRITE_FOR => {
                *s = State::Until(sent + WRITE_FOR);
                true
            }
            _ => false,
        });
    }

    pub(crate) fn lose(&self) {
        self.0.send_replace(State::Lost);
    }

    pub(crate) fn is_lost(&self) -> bool {
        matches!(*self.0.borrow(), State::Lost)
    }

    /// Waits until the session may write; `false` once it never may again.
    pub(crate) async fn ready(&self) -> bool {
        let mut rx = self.0.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                State::Open => return true,
                State::Lost => return false,
                State::Until(t) if Instant::now() < t => return true,
                State::Until(_) => {
                    // A renewal (or the loss) changes the state; poll too, in case it raced.
                    let _ = tokio::time::timeout(Duration::from_millis(100), rx.changed()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn writes_wait_while_stale_resume_on_renewal_and_stop_when_lost() {
        let t0 = Instant::now();
        let f = Fence::leased(t0);
        assert!(f.is_fenced());
        assert!(f.ready().await);
        tokio::time::advance(WRITE_FOR).await;
        // Stale: a writer waits.
        let waiting = {
            let f = f.clone();
            tokio::spawn(async move { f.ready().await })
        };
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        // An older renewal's answer arriving late changes nothing.
        f.renewed(t0);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        f.renewed(Instant::now());
        assert!(waiting.await.unwrap());
        f.lose();
        assert!(f.is_lost());
        assert!(!f.ready().await);
        f.renewed(Instant::now());
        assert!(!f.ready().await, "lost is for good");
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_fence_never_waits() {
        let f = Fence::open();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!f.is_fenced());
        assert!(f.ready().await);
    }

    #[test]
    fn the_takeover_waits_past_the_write_window() {
        assert!(TAKEOVER_AFTER_MS as u128 >= WRITE_FOR.as_millis() + 500);
        assert!(RENEW_EVERY * 2 < WRITE_FOR);
    }
}
