//! Rate limits for log lines that unauthenticated peers can cause. Pure: no I/O, no clock of its
//! own; the caller passes the time.
//!
//! Anyone can send garbage to the ingest ports or knock with wrong keys, as fast as the network
//! allows. Logging each attempt hands the attacker the log volume, so each source gets at most
//! two lines per interval: the first event at once (so an operator sees the reason without
//! waiting), then one summary with the count of the events that followed. Memory is bounded
//! too: past `max_sources` sources, new ones share one "other sources" entry.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// What the caller should do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log this event: it is the first of its source's interval.
    Log,
    /// Count it only; a [`Summary`] reports it when the interval ends.
    Suppress,
}

/// Events of one source that were not logged one by one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary<K> {
    /// The source, or `None` for the sources past the `max_sources` limit.
    pub source: Option<K>,
    /// Events suppressed in the interval (the logged first one is not counted).
    pub suppressed: u64,
    /// How long the interval lasted, from its first event until the summary.
    pub over: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    suppressed: u64,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            suppressed: 0,
        }
    }
}

/// Per-source log rate limiter: see the module documentation.
#[derive(Debug)]
pub struct LogLimiter<K> {
    interval: Duration,
    max_sources: usize,
    windows: HashMap<K, Window>,
    /// Shared by every source that found the table full.
    other: Option<Window>,
}

impl<K: Hash + Eq + Clone> LogLimiter<K> {
    /// A limiter that lets one line per source through per `interval`, tracking at most
    /// `max_sources` sources separately (at least 1).
    pub fn new(interval: Duration, max_sources: usize) -> Self {
        Self {
            interval,
            max_sources: max_sources.max(1),
            windows: HashMap::new(),
            other: None,
        }
    }

    /// The interval, e.g. to drive [`LogLimiter::due`] from a timer.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Records one event of `source` at `now`.
    pub fn hit(&mut self, source: K, now: Instant) -> Verdict {
        self.hit_n(source, 1, now)
    }

    /// Records a batch of `n` events of `source` at `now` (for counts that arrive in batches):
    /// either the whole batch is to be logged, or the whole batch is counted for the summary.
    pub fn hit_n(&mut self, source: K, n: u64, now: Instant) -> Verdict {
        if n == 0 {
            return Verdict::Suppress;
        }
        let interval = self.interval;
        let full = self.windows.len() >= self.max_sources;
        let (window, created) = if let Some(w) = self.windows.get_mut(&source) {
            (w, false)
        } else if !full {
            (self.windows.entry(source).or_insert(Window::new(now)), true)
        } else if let Some(w) = &mut self.other {
            (w, false)
        } else {
            (self.other.insert(Window::new(now)), true)
        };
        // A window that outlived its interval without a `due` call starts over (callers call
        // `due` on a timer, so this only happens between two ticks).
        if created || now.saturating_duration_since(window.started) >= interval {
            *window = Window::new(now);
            Verdict::Log
        } else {
            window.suppressed += n;
            Verdict::Suppress
        }
    }

    /// Ends the windows whose interval is over at `now`: returns a summary for each that
    /// suppressed something, and forgets them all (a quiet source costs no memory).
    pub fn due(&mut self, now: Instant) -> Vec<Summary<K>> {
        let interval = self.interval;
        let over = |w: &Window| now.saturating_duration_since(w.started) >= interval;
        let mut out = Vec::new();
        self.windows.retain(|k, w| {
            if !over(w) {
                return true;
            }
            if w.suppressed > 0 {
                out.push(Summary {
                    source: Some(k.clone()),
                    suppressed: w.suppressed,
                    over: now.saturating_duration_since(w.started),
                });
            }
            false
        });
        if let Some(w) = self.other.filter(over) {
            if w.suppressed > 0 {
                out.push(Summary {
                    source: None,
                    suppressed: w.suppressed,
                    over: now.saturating_duration_since(w.started),
                });
            }
            self.other = None;
        }
        out
    }

    /// Sources tracked separately right now.
    pub fn tracked(&self) -> usize {
        self.windows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limiter() -> LogLimiter<&'static str> {
        LogLimiter::new(10 * S, 2)
    }

    #[test]
    fn first_event_logs_the_rest_are_summarised_once() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit("a", t0), Verdict::Log);
        for i in 1..=1000 {
            assert_eq!(l.hit("a", t0 + Duration::from_millis(i)), Verdict::Suppress);
        }
        assert_eq!(l.due(t0 + 9 * S), vec![], "interval not over yet");
        assert_eq!(
            l.due(t0 + 10 * S),
            vec![Summary {
                source: Some("a"),
                suppressed: 1000,
                over: 10 * S
            }]
        );
        assert_eq!(l.due(t0 + 20 * S), vec![], "a summary is given once");
        assert_eq!(l.tracked(), 0);
        // A new interval logs its first event again.
        assert_eq!(l.hit("a", t0 + 21 * S), Verdict::Log);
    }

    #[test]
    fn sources_are_independent() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit("a", t0), Verdict::Log);
        assert_eq!(l.hit("b", t0 + S), Verdict::Log);
        assert_eq!(l.hit("a", t0 + S), Verdict::Suppress);
        assert_eq!(l.hit("b", t0 + 2 * S), Verdict::Suppress);
        assert_eq!(l.hit("b", t0 + 3 * S), Verdict::Suppress);
        // a's interval ends before b's.
        let due = l.due(t0 + 10 * S);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].source, due[0].suppressed), (Some("a"), 1));
        let due = l.due(t0 + 11 * S);
        assert_eq!((due[0].source, due[0].suppressed), (Some("b"), 2));
    }

    #[test]
    fn a_single_event_needs_no_summary() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit("a", t0), Verdict::Log);
        assert_eq!(l.due(t0 + 60 * S), vec![]);
        assert_eq!(l.tracked(), 0, "quiet sources are forgotten");
    }

    #[test]
    fn sources_past_the_limit_share_one_entry() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit("a", t0), Verdict::Log);
        assert_eq!(l.hit("b", t0), Verdict::Log);
        // The table is full: c, d, e share "other sources", which logs once.
        assert_eq!(l.hit("c", t0), Verdict::Log);
        assert_eq!(l.hit("d", t0), Verdict::Suppress);
        assert_eq!(l.hit("e", t0), Verdict::Suppress);
        assert_eq!(l.hit("c", t0), Verdict::Suppress);
        assert_eq!(l.tracked(), 2);
        let due = l.due(t0 + 10 * S);
        assert!(due.contains(&Summary {
            source: None,
            suppressed: 3,
            over: 10 * S
        }));
        // Room again after the interval.
        assert_eq!(l.hit("c", t0 + 11 * S), Verdict::Log);
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn batches_are_logged_or_counted_whole() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit_n("a", 0, t0), Verdict::Suppress, "nothing happened");
        assert_eq!(l.tracked(), 0);
        assert_eq!(
            l.hit_n("a", 500, t0),
            Verdict::Log,
            "the caller logs all 500"
        );
        assert_eq!(l.hit_n("a", 250, t0 + S), Verdict::Suppress);
        assert_eq!(l.hit_n("a", 50, t0 + 2 * S), Verdict::Suppress);
        let due = l.due(t0 + 10 * S);
        assert_eq!(due[0].suppressed, 300, "only what was not logged");
    }

    #[test]
    fn a_stale_window_restarts_even_without_due() {
        let t0 = Instant::now();
        let mut l = limiter();
        assert_eq!(l.hit("a", t0), Verdict::Log);
        assert_eq!(l.hit("a", t0 + S), Verdict::Suppress);
        assert_eq!(l.hit("a", t0 + 10 * S), Verdict::Log);
        assert_eq!(l.hit("a", t0 + 11 * S), Verdict::Suppress);
        assert_eq!(l.due(t0 + 20 * S)[0].suppressed, 1);
    }

    #[test]
    fn lines_stay_bounded_under_a_flood() {
        // 100k events from 1000 sources over 5 s, `due` every second: at most two lines per
        // tracked source per interval, plus two for the shared entry.
        let t0 = Instant::now();
        let mut l: LogLimiter<u32> = LogLimiter::new(10 * S, 64);
        let mut lines = 0;
        let mut total = 0;
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(50 * u64::from(i));
            if l.hit(i % 1000, now) == Verdict::Log {
                lines += 1;
                total += 1;
            }
            if i % 20_000 == 0 {
                for s in l.due(now) {
                    lines += 1;
                    total += s.suppressed;
                }
            }
        }
        for s in l.due(t0 + 60 * S) {
            lines += 1;
            total += s.suppressed;
        }
        assert_eq!(total, 100_000, "every event is logged or counted");
        assert!(lines <= 2 * (64 + 1), "{lines} lines");
        assert_eq!(l.tracked(), 0);
    }
}
