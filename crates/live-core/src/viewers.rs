//! Concurrent viewers of a live stream, from the viewer page's heartbeats. Pure.
//!
//! Why heartbeats and not playlist requests: behind a CDN that collapses identical playlist
//! requests (as it must, for LL-HLS blocking reloads at scale) the origin no longer sees one
//! request per player. A heartbeat is a small uncached POST that every CDN passes through, so
//! the count is the same with or without one. A viewer is a random id the page keeps for its
//! tab, so a reload is the same viewer; it counts while its last heartbeat is younger than the
//! window, and stops at once when the page says it is leaving.

use std::collections::HashMap;

/// How long a viewer counts after its last heartbeat (the page beats every 5 s).
pub const WINDOW_MS: i64 = 15_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewerError {
    #[error("a viewer session id is 8 to 64 letters, digits, '-' or '_'")]
    BadId,
    #[error("this stream counts as many viewers as it can; the heartbeat was not counted")]
    Full,
}

#[derive(Debug, Clone)]
pub struct ViewerCounter {
    window_ms: i64,
    max: usize,
    last_seen: HashMap<String, i64>,
}

impl ViewerCounter {
    /// Counts at most `max` viewers at once (memory stays bounded whatever clients send).
    pub fn new(window_ms: i64, max: usize) -> Self {
        Self {
            window_ms,
            max,
            last_seen: HashMap::new(),
        }
    }

    /// A heartbeat from viewer `id` at `now_ms`.
    pub fn beat(&mut self, id: &str, now_ms: i64) -> Result<(), ViewerError> {
        check_id(id)?;
        if let Some(t) = self.last_seen.get_mut(id) {
            *t = (*t).max(now_ms);
            return Ok(());
        }
        if self.last_seen.len() >= self.max {
            self.prune(now_ms);
            if self.last_seen.len() >= self.max {
                return Err(ViewerError::Full);
            }
        }
        self.last_seen.insert(id.to_string(), now_ms);
        Ok(())
    }

    /// A heartbeat from the viewer page; `leaving` (the page is closing) forgets it at once.
    pub fn heartbeat(&mut self, id: &str, leaving: bool, now_ms: i64) -> Result<(), ViewerError> {
        if leaving {
            self.leave(id);
            return Ok(());
        }
        self.beat(id, now_ms)
    }

    /// Viewer `id` closed the page.
    pub fn leave(&mut self, id: &str) {
        self.last_seen.remove(id);
    }

    /// Viewers whose last heartbeat is within the window.
    pub fn count(&mut self, now_ms: i64) -> u64 {
        self.prune(now_ms);
        self.last_seen.len() as u64
    }

    fn prune(&mut self, now_ms: i64) {
        let oldest = now_ms - self.window_ms;
        self.last_seen.retain(|_, t| *t > oldest);
    }
}

fn check_id(id: &str) -> Result<(), ViewerError> {
    let ok = (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ViewerError::BadId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef";
    const B: &str = "fedcba9876543210";

    #[test]
    fn two_viewers_count_two_and_a_reload_stays_one() {
        let mut c = ViewerCounter::new(WINDOW_MS, 100);
        c.beat(A, 0).unwrap();
        c.beat(B, 1000).unwrap();
        assert_eq!(c.count(1000), 2);
        // The same tab reloaded beats with the same id.
        c.beat(A, 2000).unwrap();
        c.beat(A, 2100).unwrap();
        assert_eq!(c.count(2100), 2);
    }

    #[test]
    fn viewers_expire_after_the_window_or_at_once_when_leaving() {
        let mut c = ViewerCounter::new(WINDOW_MS, 100);
        c.beat(A, 0).unwrap();
        c.beat(B, 10_000).unwrap();
        assert_eq!(c.count(14_999), 2);
        assert_eq!(c.count(15_000), 1, "A's last beat is 15 s old");
        c.leave(B);
        assert_eq!(c.count(15_000), 0);
        c.leave(B);
        // A late, out-of-order beat does not move a viewer back in time.
        c.beat(A, 20_000).unwrap();
        c.beat(A, 19_000).unwrap();
        assert_eq!(c.count(34_500), 1);
    }

    #[test]
    fn ids_are_checked_and_the_count_is_bounded() {
        let mut c = ViewerCounter::new(WINDOW_MS, 2);
        for bad in [
            "",
            "short",
            "has space in it",
            &"x".repeat(65),
            "ünicode-id-12",
        ] {
            assert_eq!(c.beat(bad, 0), Err(ViewerError::BadId), "{bad:?}");
        }
        c.beat(A, 0).unwrap();
        c.beat(B, 0).unwrap();
        assert_eq!(c.beat("third-viewer", 1000), Err(ViewerError::Full));
        // Known viewers still beat; expired ones make room.
        c.beat(A, 1000).unwrap();
        c.beat("third-viewer", 15_500).unwrap();
        assert_eq!(c.count(15_500), 2);
    }

    proptest::proptest! {
        #[test]
        fn the_count_never_exceeds_the_bound(
            beats in proptest::collection::vec((0u8..50, 0i64..100_000, proptest::bool::ANY), 0..400)
        ) {
            let mut c = ViewerCounter::new(WINDOW_MS, 16);
            for (who, t, leave) in beats {
                let id = format!("viewer-{who:04}");
                if leave { c.leave(&id) } else { let _ = c.beat(&id, t); }
                proptest::prop_assert!(c.count(t) <= 16);
            }
        }
    }
}
