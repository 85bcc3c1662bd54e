//! The publisher's bitrate limit (`live.max_ingest_kbps`): what a publisher sends is averaged
//! over windows of [`WINDOW_MS`], so that keyframe bursts and a network catching up after a
//! hiccup do not count, and a publisher over the limit for a whole window is told why.

use oxcast_base::clock::Millis;

/// The averaging window.
pub const WINDOW_MS: Millis = 5_000;

#[derive(Debug, Clone)]
pub struct IngestRate {
    limit_kbps: u32,
    window_start: Option<Millis>,
    bytes: u64,
}

impl IngestRate {
    pub fn new(limit_kbps: u32) -> Self {
        Self {
            limit_kbps,
            window_start: None,
            bytes: 0,
        }
    }

    /// `n` bytes arrived at `now`. `Some(reason)` once a whole window averaged over the limit.
    pub fn on_bytes(&mut self, now: Millis, n: usize) -> Option<String> {
        let start = *self.window_start.get_or_insert(now);
        if now - start >= WINDOW_MS {
            let kbps = self.bytes as f64 * 8.0 / (now - start) as f64;
            self.window_start = Some(now);
            self.bytes = n as u64;
            if kbps > f64::from(self.limit_kbps) {
                return Some(format!(
                    "the publisher sent {kbps:.0} kbit/s over {} s; this server accepts at most \
                     {} kbit/s (live.max_ingest_kbps): lower the encoder's bitrate",
                    WINDOW_MS / 1000,
                    self.limit_kbps
                ));
            }
            return None;
        }
        self.bytes += n as u64;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_window_over_the_limit_is_refused_and_bursts_are_not() {
        // 1000 kbit/s is 125 000 bytes a second.
        let mut r = IngestRate::new(1000);
        assert_eq!(r.on_bytes(0, 0), None);
        // A 500 KB keyframe burst, then quiet: 800 kbit/s over the window.
        assert_eq!(r.on_bytes(100, 500_000), None);
        assert_eq!(r.on_bytes(4_999, 0), None);
        assert_eq!(r.on_bytes(5_000, 0), None, "500 KB in 5 s is 800 kbit/s");
        // 130 000 bytes a second for a window: 1040 kbit/s.
        for s in 1..=5 {
            assert_eq!(r.on_bytes(5_000 + s * 1000 - 1, 130_000), None);
        }
        let why = r.on_bytes(10_000, 0).expect("over the limit");
        assert!(why.contains("1040 kbit/s"), "{why}");
        assert!(why.contains("at most 1000 kbit/s"), "{why}");
    }

    #[test]
    fn exactly_the_limit_passes() {
        let mut r = IngestRate::new(800);
        r.on_bytes(0, 0);
        for s in 1..=5 {
            assert_eq!(r.on_bytes(s * 1000 - 1, 100_000), None);
        }
        assert_eq!(r.on_bytes(5_000, 0), None);
    }
}
