//! The streamer's dashboard: a session's health sampled once a second, its alerts, who is
//! publishing, and how many are watching. The rules live in [`crate::health`] and
//! [`crate::viewers`] (pure); this is where the session feeds them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oxcast_base::{SessionId, StreamId};
use oxcast_ingest::keyframes::KeyframeScanner;
use oxcast_ingest::Container;

use crate::health::{Alert, AlertRules, EncoderReading, HealthMonitor, Sample};
use crate::session::{LiveError, LiveManager, Session};
use crate::viewers::{ViewerCounter, WINDOW_MS};

/// Every this many monitor ticks (seconds), the stream's row is checked.
const STREAM_CHECK_TICKS: u64 = 3;

/// The charts' span.
const HISTORY_MS: i64 = 30 * 60 * 1000;
/// Viewers counted per stream at most: memory stays bounded whatever clients send.
pub(crate) const MAX_VIEWERS: usize = 100_000;

/// Who is publishing, as the ingest and the probe saw them.
#[derive(Debug, Clone, PartialEq)]
pub struct Publisher {
    /// `rtmp` or `srt`.
    pub protocol: String,
    pub address: SocketAddr,
    pub video_codec: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub audio_codec: Option<String>,
}

/// A stream's state as the streamer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveState {
    /// No session since this process started.
    Idle,
    Live,
    /// The publisher went away; the session continues if it is back within the grace period.
    Reconnecting,
    Ended,
}

impl LiveState {
    pub fn as_str(self) -> &'static str {
        match self {
            LiveState::Idle => "idle",
            LiveState::Live => "live",
            LiveState::Reconnecting => "reconnecting",
            LiveState::Ended => "ended",
        }
    }
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthView {
    pub state: LiveState,
    pub session_id: Option<SessionId>,
    pub started_at_ms: Option<i64>,
    pub publisher: Option<Publisher>,
    pub current: Option<Sample>,
    pub samples: Vec<Sample>,
    pub alerts: Vec<Alert>,
}

/// One session's monitoring state, beside (not inside) the packager's lock.
#[derive(Debug)]
pub(crate) struct Monitor {
    pub health: HealthMonitor,
    pub publisher: Option<Publisher>,
    /// The top encoded rung, kbit/s.
    pub top_kbps: Option<f64>,
}

impl Monitor {
    pub fn new() -> Self {
        Self {
            health: HealthMonitor::new(HISTORY_MS),
            publisher: None,
            top_kbps: None,
        }
    }
}

/// Finds keyframes in a publisher's media and reports what arrived to the monitor.
pub(crate) struct MediaMeter {
    scanner: KeyframeScanner,
    session: Arc<Session>,
    clock: oxcast_base::clock::SharedClock,
}

impl MediaMeter {
    pub fn new(
        container: Container,
        session: Arc<Session>,
        clock: oxcast_base::clock::SharedClock,
    ) -> Self {
        Self {
            scanner: KeyframeScanner::new(container),
            session,
            clock,
        }
    }

    pub fn on_chunk(&mut self, chunk: &[u8]) {
        let keyframes = self.scanner.scan(chunk);
        let now = self.clock.now_ms();
        self.session
            .monitor
            .lock()
            .expect("monitor")
            .health
            .on_media(now, chunk.len(), keyframes);
    }
}

/// Viewer counters of the streams that are live here.
#[derive(Debug, Default)]
pub(crate) struct ViewerBoard {
    streams: HashMap<StreamId, ViewerCounter>,
}

impl ViewerBoard {
    fn count(&mut self, stream: StreamId, now_ms: i64) -> u64 {
        self.streams.get_mut(&stream).map_or(0, |c| c.count(now_ms))
    }

    fn total(&mut self, now_ms: i64) -> u64 {
        self.streams.values_mut().map(|c| c.count(now_ms)).sum()
    }
}

impl LiveManager {
    /// The dashboard's view of `stream`: samples after `since_ms` (all with `None`).
    pub fn health(&self, stream: StreamId, since_ms: Option<i64>) -> HealthView {
        let Some(session) = self.session(stream) else {
            return HealthView {
                state: LiveState::Idle,
                session_id: None,
                started_at_ms: None,
                publisher: None,
                current: None,
                samples: Vec::new(),
                alerts: Vec::new(),
            };
        };
        let (state, session_id, started_at_ms) = {
            let st = session.state.lock().expect("state");
            let state = match (st.ended, st.publishing) {
                (true, _) => LiveState::Ended,
                (false, true) => LiveState::Live,
                (false, false) => LiveState::Reconnecting,
            };
            (state, st.session_id, st.started_at_ms)
        };
        let m = session.monitor.lock().expect("monitor");
        let rules = AlertRules {
            segment_s: self.config.live.segment_s,
            top_kbps: m.top_kbps,
        };
        HealthView {
            state,
            session_id: Some(session_id),
            started_at_ms: Some(started_at_ms),
            publisher: m.publisher.clone(),
            current: (state == LiveState::Live)
                .then(|| m.health.latest().cloned())
                .flatten(),
            samples: m.health.since(since_ms).cloned().collect(),
            alerts: m
                .health
                .alerts(self.clock.now_ms(), rules, state == LiveState::Live),
        }
    }

    /// A heartbeat from viewer `id` of `stream` (`leaving`: the page is closing).
    pub fn viewer_beat(&self, stream: StreamId, id: &str, leaving: bool) -> Result<(), LiveError> {
        let live = self
            .session(stream)
            .is_some_and(|s| !s.state.lock().expect("state").ended);
        if !live {
            return Err(LiveError::NotLive);
        }
        let now = self.clock.now_ms();
        let mut board = self.viewers.lock().expect("viewers");
        let counter = board
            .streams
            .entry(stream)
            .or_insert_with(|| ViewerCounter::new(WINDOW_MS, MAX_VIEWERS));
        counter.heartbeat(id, leaving, now).map_err(LiveError::from)
    }

    /// Sessions not ended, and the viewers of all of them: this process's live load.
    pub fn load(&self) -> (u32, u64) {
        let now = self.clock.now_ms();
        let total = self.viewers.lock().expect("viewers").total(now);
        (self.active_sessions(), total)
    }

    /// Concurrent viewers of `stream` counted here.
    pub fn viewers(&self, stream: StreamId) -> u64 {
        let now = self.clock.now_ms();
        self.viewers.lock().expect("viewers").count(stream, now)
    }

    /// The session is over: its viewers no longer count.
    pub(crate) fn forget_viewers(&self, stream: StreamId) {
        let now = self.clock.now_ms();
        let mut board = self.viewers.lock().expect("viewers");
        board.streams.remove(&stream);
        metrics::gauge!("oxcast_live_viewers").set(board.total(now) as f64);
    }

    /// Samples the session once a second until it ends or the server shuts down.
    pub(crate) async fn run_monitor(self: Arc<Self>, session: Arc<Session>, stream: StreamId) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut ticks = 0u64;
        let mut remote = 0u64;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = self.shutdown.cancelled() => return,
            }
            ticks += 1;
            // A deletion or key reset made through another API node (see `stop`).
            if ticks.is_multiple_of(STREAM_CHECK_TICKS) {
                self.check_stream(stream).await;
                // Viewers whose heartbeats other API nodes took (a database outage keeps the
                // last figure).
                let since = self.clock.now_ms() - WINDOW_MS;
                if let Ok(n) = self.db.remote_viewers(stream, since).await {
                    remote = n;
                }
            }
            let (reading, publishing, ended) = {
                let st = session.state.lock().expect("state");
                let reading = EncoderReading {
                    fps: st.health.fps,
                    speed: st.health.encoder_speed,
                    dropped_frames: st.health.dropped_frames,
                };
                (reading, st.publishing, st.ended)
            };
            if ended || session.fence.is_lost() {
                return;
            }
            let now = self.clock.now_ms();
            let (viewers, total) = {
                let mut board = self.viewers.lock().expect("viewers");
                (board.count(stream, now) + remote, board.total(now) + remote)
            };
            metrics::gauge!("oxcast_live_viewers").set(total as f64);
            let reading = if publishing {
                reading
            } else {
                EncoderReading::default()
            };
            session
                .monitor
                .lock()
                .expect("monitor")
                .health
                .tick(now, reading, viewers);
        }
    }
}
