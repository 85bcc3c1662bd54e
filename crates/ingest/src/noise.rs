//! Logging what unauthenticated peers do wrong, through a [`LogLimiter`] per server.

use std::{fmt::Display, net::IpAddr, sync::Mutex, time::Duration};

use tracing::{debug, info, warn};

use crate::{
    ratelog::{LogLimiter, Verdict},
    IngestConfig, Protocol,
};

/// What a peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Noise {
    /// Bytes that are not the protocol (a bad handshake, an unparsable datagram), or a peer
    /// that never got to a publish request in time.
    Malformed,
    /// A publish refused: wrong key, wrong application, bad `streamid`.
    Refused,
}

impl Noise {
    fn as_str(self) -> &'static str {
        match self {
            Noise::Malformed => "malformed",
            Noise::Refused => "refused",
        }
    }
}

/// Where noise came from; `None` when the protocol stack does not say (SRT datagrams that do
/// not parse are counted by `srt-tokio` without their source).
type Source = (Option<IpAddr>, Noise);

pub(crate) struct NoiseLog {
    protocol: Protocol,
    limiter: Mutex<LogLimiter<Source>>,
}

impl NoiseLog {
    pub(crate) fn new(protocol: Protocol, config: &IngestConfig) -> Self {
        Self {
            protocol,
            limiter: Mutex::new(LogLimiter::new(config.log_interval, config.log_max_sources)),
        }
    }

    /// How often [`NoiseLog::flush`] should run: often enough that a summary comes soon after
    /// its interval ends.
    pub(crate) fn tick(&self) -> Duration {
        let interval = self.limiter.lock().expect("limiter").interval();
        (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }

    /// Notes `n` events of one kind from `source`, described by `what`: the first note of an
    /// interval is logged (INFO), later ones only at DEBUG and counted in the next summary.
    pub(crate) fn note(&self, source: Option<IpAddr>, noise: Noise, n: u64, what: &dyn Display) {
        let now = tokio::time::Instant::now().into_std();
        let verdict = self
            .limiter
            .lock()
            .expect("limiter")
            .hit_n((source, noise), n, now);
        let protocol = self.protocol.as_str();
        let source = Shown(source);
        match verdict {
            Verdict::Log => info!(
                protocol,
                %source,
                kind = noise.as_str(),
                "{protocol} {} from {source}: {what}; more from this source are counted, not logged",
                noise.as_str()
            ),
            Verdict::Suppress => debug!(protocol, %source, kind = noise.as_str(), "{what}"),
        }
    }

    /// Logs a summary (WARN) for every source whose interval ended with suppressed events.
    pub(crate) fn flush(&self) {
        let now = tokio::time::Instant::now().into_std();
        let due = self.limiter.lock().expect("limiter").due(now);
        let protocol = self.protocol.as_str();
        for s in due {
            let (source, kind) = match s.source {
                Some((source, noise)) => (Shown(source), noise.as_str()),
                None => (Shown(None), "malformed or refused"),
            };
            let source_text = match s.source {
                Some(_) => source.to_string(),
                None => "other sources (too many to track one by one)".into(),
            };
            warn!(
                protocol,
                source = %source_text,
                kind,
                count = s.suppressed,
                "{protocol}: {} more {kind} from {source_text} in the last {:.0} s",
                s.suppressed,
                s.over.as_secs_f64()
            );
        }
    }
}

struct Shown(Option<IpAddr>);

impl Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, "{ip}"),
            None => f.write_str("an unreported source"),
        }
    }
}
