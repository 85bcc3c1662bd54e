//! At most one log line per interval for a condition that can repeat thousands of times a
//! second (accept errors under descriptor exhaustion), with the count it stands for.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLog {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one occurrence at `now`; returns the number of occurrences to report when a line
    /// is due (this one and those swallowed since the last line), else `None`.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.suppressed += 1;
        let due = self
            .last
            .is_none_or(|l| now.saturating_duration_since(l) >= self.every);
        if due {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut r = RateLog::new(Duration::from_secs(10));
        assert_eq!(r.hit(t0), Some(1));
        for i in 1..1000 {
            assert_eq!(r.hit(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(r.hit(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(r.hit(t0 + Duration::from_secs(11)), None);
    }
}
