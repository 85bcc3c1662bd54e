//! Sessions: key checks, epochs (one per publisher connection), the grace period, the end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxcast_base::clock::SharedClock;
use oxcast_base::{Config, SessionId, StreamId};
use oxcast_db::{Db, LiveStream};
use oxcast_ingest::{MediaStream, PublishHandler, PublishRequest, Refusal};
use oxcast_media::compress::Compressible;
use oxcast_media::ladder::{self, LadderSpec, Rung, SourceVideo};
use oxcast_store::{keys, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

mod epoch;
mod serving;

use crate::encoder::{self, EncoderPlan, EncoderStats, LiveOutput};
use crate::fence::Fence;
use crate::growing::{self, Growing, LiveObject};
use crate::monitor::{MediaMeter, Monitor, Publisher, ViewerBoard};
use crate::package::{package, queue_added, write_objects, Write};
use crate::probe::{probe_source, Probed, SourceProbe};
use crate::publish::{Signal, TOPIC};
use crate::rendered::Rendered;
use crate::slots::{Reserved, Slot, LEASE_TTL_MS};
use crate::state::{SessionState, AUDIO};
use oxcast_live_core::slot::{Action, Event};

/// Why a live request cannot be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LiveError {
    #[error("the stream is not live")]
    NotLive,
    #[error("the stream is starting; try again shortly")]
    Starting,
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the requested part did not appear in time")]
    Timeout,
    /// A bounded table is full; retry later.
    #[error("{0}")]
    Busy(String),
    #[error("storage: {0}")]
    Store(#[from] oxcast_store::Error),
    /// The database or the bucket did not answer; retry shortly.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl From<oxcast_live_core::viewers::ViewerError> for LiveError {
    fn from(e: oxcast_live_core::viewers::ViewerError) -> Self {
        use oxcast_live_core::viewers::ViewerError;
        match e {
            ViewerError::BadId => LiveError::BadRequest(e.to_string()),
            ViewerError::Full => LiveError::Busy(e.to_string()),
        }
    }
}

/// What the API shows about a stream's current (or last) session.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveStatus {
    pub session_id: SessionId,
    pub video_id: oxcast_base::VideoId,
    pub started_at_ms: i64,
    pub publishing: bool,
    pub ended: bool,
    pub ingest_kbps: f64,
    pub fps: f64,
    pub dropped_frames: u64,
    pub encoder_speed: f64,
    pub latency_s: Option<f64>,
}

/// A publisher that was accepted by the ingest but refused once its media was probed (for
/// example an audio-only stream): no session and no video were created for it.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedPublish {
    /// What the streamer has to change.
    pub reason: String,
    pub at_ms: i64,
}

/// Listing delay, in seconds, for parts and segments of a session.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyStats {
    pub parts: Vec<f64>,
    pub segments: Vec<f64>,
}

pub(crate) struct Session {
    pub(crate) state: Mutex<SessionState>,
    pub(crate) monitor: Mutex<Monitor>,
    /// Moves with every change that lists something new (playlist waiters watch it).
    pub(crate) changed: watch::Sender<u64>,
    /// Moves with every chunk as well: only readers of objects being written watch it, so
    /// that chunks do not wake every held playlist request.
    pub(crate) grown: watch::Sender<u64>,
    /// Manifests as last rendered, shared by every request until the next change.
    pub(crate) rendered: Rendered,
    pub(crate) writer: mpsc::Sender<Write>,
    pub(crate) title: String,
    /// Whether (and until when) this node may still write the session: see [`crate::fence`].
    pub(crate) fence: Fence,
    /// Taken over from an encoder that was lost: the first epoch here continues what that one
    /// stored (see [`crate::takeover`]).
    pub(crate) adopted: std::sync::atomic::AtomicBool,
}

impl Session {
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
        self.bump_grown();
    }

    pub(crate) fn bump_grown(&self) {
        self.grown.send_modify(|v| *v += 1);
    }
}

/// The start of a publisher's media, probed.
struct Head {
    probe: SourceProbe,
    bytes: Vec<u8>,
    /// When the first media arrived (ms, the injected clock).
    first_at: i64,
}

/// How long a new publisher has to send media that ffprobe can read.
const PROBE_WAIT: Duration = Duration::from_secs(5);

pub struct LiveManager {
    pub(crate) db: Db,
    pub(crate) store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) clock: SharedClock,
    pub(crate) scratch: PathBuf,
    pub(crate) slots: Mutex<HashMap<StreamId, Slot>>,
    pub(crate) viewers: Mutex<ViewerBoard>,
    pub(crate) shutdown: CancellationToken,
    /// Every task this manager starts (publishers' epochs, their monitors and object writers,
    /// grace timers), waited for at shutdown.
    pub(crate) tasks: TaskTracker,
    /// This process, as the holder of stream leases (`{node_id}:{pid}`).
    pub(crate) holder: String,
}

fn live_ladder(src: &SourceVideo, cfg: &oxcast_base::config::LiveConfig) -> Vec<Rung> {
    let rate = |h: u32| match h {
        h if h >= 1080 => 4_500_000,
        h if h >= 720 => 2_800_000,
        h if h >= 480 => 1_400_000,
        h if h >= 360 => 800_000,
        _ => 400_000,
    };
    let spec = LadderSpec {
        rungs: cfg.rungs.iter().map(|&h| (h, rate(h))).collect(),
    };
    ladder::build_ladder(src, &spec)
}

impl LiveManager {
    pub fn new(
        db: Db,
        store: Store,
        config: Arc<Config>,
        clock: SharedClock,
        scratch: PathBuf,
        shutdown: CancellationToken,
        holder: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            store,
            config,
            clock,
            scratch,
            slots: Mutex::new(HashMap::new()),
            viewers: Mutex::new(ViewerBoard::default()),
            shutdown,
            tasks: TaskTracker::new(),
            holder,
        })
    }

    pub(crate) fn active_sessions(&self) -> u32 {
        let slots = self.slots.lock().expect("slots");
        slots
            .values()
            .filter_map(|s| s.session.as_ref())
            .filter(|s| !s.state.lock().expect("state").ended)
            .count() as u32
    }

    /// Whether this node runs `stream` (its session `session`, when given).
    pub fn serves(&self, stream: StreamId, session: Option<SessionId>) -> bool {
        self.session(stream).is_some_and(|s| {
            session.is_none_or(|id| s.state.lock().expect("state").session_id == id)
        })
    }

    /// Whether this node runs `stream` and its session has not ended.
    pub fn runs(&self, stream: StreamId) -> bool {
        self.session(stream)
            .is_some_and(|s| !s.state.lock().expect("state").ended)
    }

    pub(crate) fn session(&self, stream: StreamId) -> Option<Arc<Session>> {
        self.slots
            .lock()
            .expect("slots")
            .get(&stream)?
            .session
            .clone()
    }

    pub fn status(&self, stream: StreamId) -> Option<LiveStatus> {
        let s = self.session(stream)?;
        let st = s.state.lock().expect("state");
        let elapsed = ((self.clock.now_ms() - st.started_at_ms) as f64 / 1000.0).max(0.001);
        Some(LiveStatus {
            session_id: st.session_id,
            video_id: st.video_id,
            started_at_ms: st.started_at_ms,
            publishing: st.publishing,
            ended: st.ended,
            ingest_kbps: st.health.ingest_bytes as f64 * 8.0 / 1000.0 / elapsed,
            fps: st.health.fps,
            dropped_frames: st.health.dropped_frames,
            encoder_speed: st.health.encoder_speed,
            latency_s: st.latency_estimate(),
        })
    }

    pub fn latency_stats(&self, stream: StreamId) -> Option<LatencyStats> {
        let s = self.session(stream)?;
        let st = s.state.lock().expect("state");
        Some(LatencyStats {
            parts: st.part_latency.clone(),
            segments: st.segment_latency.clone(),
        })
    }

    /// Ends every session at shutdown so their recordings are published.
    pub async fn shutdown(self: &Arc<Self>) {
        let sessions: Vec<Arc<Session>> = self
            .slots
            .lock()
            .expect("slots")
            .values()
            .filter_map(|s| s.session.clone())
            .collect();
        for s in sessions {
            self.finish(&s).await;
        }
        // Encoders see the cancelled token and drain; each object writer ends when its session
        // is dropped, and these were the last references.
        self.slots.lock().expect("slots").clear();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(20), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "live tasks still running at shutdown"
            );
        }
    }

    /// Starts a session and the video row of its recording.
    async fn open_session(self: &Arc<Self>, stream: &LiveStream) -> Result<Arc<Session>, String> {
        let now = self.clock.now_ms();
        let title = format!(
            "{} ({})",
            stream.title,
            crate::state::rfc3339_ms(now)
                .get(..16)
                .unwrap_or_default()
                .replace('T', " ")
        );
        let row = self
            .db
            .start_live_session(stream, &title, now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not start a live session");
                "internal error starting the session".to_string()
            })?;
        let session = self.new_session(
            SessionState::new(
                stream.id,
                row.id,
                row.video_id,
                now,
                self.config.live.segment_s,
                self.config.live.part_s,
            ),
            title,
            false,
        );
        if let Some(slot) = self.slots.lock().expect("slots").get_mut(&stream.id) {
            slot.session = Some(session.clone());
        }
        metrics::gauge!("oxcast_live_sessions_active").increment(1.0);
        tracing::info!(session = %row.id, video = %row.video_id, "live session started");
        self.signal(Signal::Stream(stream.id)).await;
        Ok(session)
    }

    /// A session's shared state and its object writer, fenced by the stream's lease where
    /// another encoder may take the stream over.
    pub(crate) fn new_session(
        self: &Arc<Self>,
        state: SessionState,
        title: String,
        adopted: bool,
    ) -> Arc<Session> {
        let stream = state.stream_id;
        // Stale until the first renewal: the lease may have been taken a while ago (before
        // the publisher's media was probed).
        let fence = if self.takes_relayed() {
            Fence::leased(tokio::time::Instant::now() - crate::fence::WRITE_FOR)
        } else {
            Fence::open()
        };
        let (writer, rx) = mpsc::channel(256);
        self.tasks.spawn(write_objects(
            self.store.clone(),
            self.db.clone(),
            rx,
            fence.clone(),
        ));
        let session = Arc::new(Session {
            state: Mutex::new(state),
            monitor: Mutex::new(Monitor::new()),
            changed: watch::channel(0).0,
            grown: watch::channel(0).0,
            rendered: Rendered::default(),
            writer,
            title,
            fence,
            adopted: std::sync::atomic::AtomicBool::new(adopted),
        });
        if session.fence.is_fenced() {
            self.tasks
                .spawn(self.clone().keep_lease(stream, Arc::downgrade(&session)));
        }
        session
    }

    /// Whether ingest nodes relay publishers here, so that another encoder may take a stream
    /// over from this one.
    pub(crate) fn takes_relayed(&self) -> bool {
        self.config.live.relay_listen.is_some()
    }

    /// One publisher connection: probe, encode, package, until the publisher goes away.
    async fn run_epoch(
        self: Arc<Self>,
        live_stream: LiveStream,
        place: Reserved,
        mut media: MediaStream,
        from: (&'static str, std::net::SocketAddr),
    ) {
        let Reserved {
            generation,
            resumed,
            kick,
        } = place;
        let stream = live_stream.id;
        let head = self.probe_head(&mut media).await;
        let (session, head) = match (head, resumed) {
            // A resumed session whose new media cannot be read ends this epoch like any other.
            (Err(why), Some(session)) => (session, Err(why)),
            // Nothing was created for this publisher yet, and nothing will be.
            (Err(why), None) => return self.refuse_after_probe(stream, generation, why).await,
            (Ok(head), resumed) => {
                let actions = self.step(stream, Event::Probed { generation });
                match (actions.as_slice(), resumed) {
                    ([Action::Encode { .. }], Some(session)) => (session, Ok(head)),
                    ([Action::Open { .. }], _) if !self.shutdown.is_cancelled() => {
                        match self.open_session(&live_stream).await {
                            Ok(session) => {
                                let id = session.state.lock().expect("state").session_id;
                                let opened = self.step(
                                    stream,
                                    Event::Opened {
                                        generation,
                                        session: id,
                                    },
                                );
                                if !matches!(opened.as_slice(), [Action::Encode { .. }]) {
                                    self.act(stream, opened).await;
                                    return;
                                }
                                self.tasks
                                    .spawn(self.clone().run_monitor(session.clone(), stream));
                                (session, Ok(head))
                            }
                            Err(why) => {
                                return self.refuse_after_probe(stream, generation, why).await
                            }
                        }
                    }
                    ([Action::Open { .. }], _) => {
                        return self
                            .refuse_after_probe(stream, generation, "server shutting down".into())
                            .await
                    }
                    // Superseded meanwhile (the stream was deleted, say).
                    _ => return,
                }
            }
        };
        let result = match head {
            Ok(head) => {
                session.monitor.lock().expect("monitor").publisher = Some(Publisher {
                    protocol: from.0.to_string(),
                    address: from.1,
                    video_codec: head.probe.video_codec.clone(),
                    width: head.probe.source.width,
                    height: head.probe.source.height,
                    fps: head.probe.frame_rate,
                    audio_codec: head.probe.audio_codec.clone(),
                });
                self.encode_epoch(&session, media, head, kick).await
            }
            // A resumed session's new media that cannot go live.
            Err(why) => Ok(Some(why)),
        };
        let refused = match result {
            Ok(refused) => refused,
            Err(e) => {
                tracing::warn!(error = %e, "live epoch ended with an error");
                None
            }
        };
        {
            let mut st = session.state.lock().expect("state");
            st.publishing = false;
        }
        session
            .monitor
            .lock()
            .expect("monitor")
            .health
            .on_publisher_gone();
        session.bump();
        // Other nodes' held requests answer at once too: nothing more is coming for now.
        session.publish_all(self.clock.now_ms()).await;
        let now = self.clock.now_ms();
        let actions = match refused {
            // Kept for the stream's status, so the streamer learns why.
            Some(reason) => self.step(
                stream,
                Event::Refused {
                    generation,
                    reason,
                    now,
                },
            ),
            None => self.step(stream, Event::Gone { generation, now }),
        };
        if actions.iter().any(|a| matches!(a, Action::WakeAt(_))) {
            tracing::info!(
                grace_s = self.config.live.grace_s,
                "publisher gone; waiting for a reconnect"
            );
        }
        self.act(stream, actions).await;
    }

    /// Ends a publisher that may not go live: the publisher is disconnected (its media stream
    /// dropped) and the reason kept for the stream's status.
    async fn refuse_after_probe(
        self: &Arc<Self>,
        stream: StreamId,
        generation: u64,
        reason: String,
    ) {
        tracing::warn!(%reason, "publisher refused after probing; no session was started");
        metrics::counter!("oxcast_live_publish_refused_total", "reason" => "media").increment(1);
        let now = self.clock.now_ms();
        let actions = self.step(
            stream,
            Event::Refused {
                generation,
                reason,
                now,
            },
        );
        self.act(stream, actions).await;
        if self.session(stream).is_none() {
            self.release_lease(stream).await;
        }
    }

    /// Ends a session: last playlists get ENDLIST, the recording is written as VOD and
    /// published. Idempotent.
    pub(crate) async fn finish(&self, session: &Arc<Session>) {
        // Another node continues it.
        if session.fence.is_lost() {
            return;
        }
        let (video, segments) = {
            let mut st = session.state.lock().expect("state");
            if st.ended {
                return;
            }
            let wall = st
                .epochs
                .last()
                .map_or(st.started_at_ms, |e| e.wall_start_ms);
            let mut rest = Vec::new();
            for r in &mut st.renditions {
                rest.push((r.name.clone(), r.close(wall)));
            }
            st.ended = true;
            st.publishing = false;
            (st.video_id, rest)
        };
        for (name, added) in segments {
            queue_added(session, &name, added, true).await;
        }
        session.bump();
        session.publish_all(self.clock.now_ms()).await;
        self.forget_viewers(stream_id_of(session));
        metrics::gauge!("oxcast_live_sessions_active").decrement(1.0);
        let (tx, rx) = oneshot::channel();
        let _ = session.writer.send(Write::Flush(tx)).await;
        let _ = rx.await;
        // A lease lost meanwhile: the node that took the session over publishes it.
        if !session.fence.ready().await {
            return;
        }
        let now = self.clock.now_ms();
        let session_id = session.state.lock().expect("state").session_id;
        match self.publish_recording(session).await {
            Ok(p) => {
                tracing::info!(%video, duration_s = p.duration_s, "live session ended; recording published");
                if let Err(e) = self.db.set_video_ready(video, &p, now).await {
                    tracing::error!(error = %e, "could not publish the recording");
                }
            }
            Err(why) => {
                tracing::warn!(%video, %why, "live session ended without a recording");
                let _ = self.db.set_video_failed(video, &why, now).await;
            }
        }
        if let Err(e) = self.db.end_live_session(session_id, now).await {
            tracing::error!(error = %e, "could not end the live session");
        }
        self.release_lease(stream_id_of(session)).await;
        self.signal(Signal::Stream(stream_id_of(session))).await;
        tracing::info!(title = %session.title, "session finished");
    }

    /// Tells other nodes, which otherwise notice within their cache's lifetime.
    async fn signal(&self, signal: Signal) {
        if let Err(e) = self.db.notify(TOPIC, &signal.payload()).await {
            tracing::warn!(error = %e, "signalling a live change failed");
        }
    }
}

/// The ingest servers' view of the manager.
pub struct LiveHandler(pub Arc<LiveManager>);

impl LiveManager {
    pub fn handler(self: &Arc<Self>) -> Arc<dyn PublishHandler> {
        Arc::new(LiveHandler(self.clone()))
    }
}

#[async_trait::async_trait]
impl PublishHandler for LiveHandler {
    async fn publish(&self, req: PublishRequest, media: MediaStream) -> Result<(), Refusal> {
        let this = &self.0;
        if this.shutdown.is_cancelled() {
            return Err(Refusal("this server is shutting down; try again".into()));
        }
        let stream = match this.db.live_stream_by_key(&req.key).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                metrics::counter!("oxcast_live_publish_refused_total", "reason" => "key")
                    .increment(1);
                return Err(Refusal("unknown stream key".into()));
            }
            Err(e) => {
                tracing::error!(error = %e, "stream key lookup failed");
                return Err(Refusal("internal error".into()));
            }
        };
        // One live node per stream: the lease says which (this one, on a reconnect).
        let now = this.clock.now_ms();
        let taken = match &req.takeover {
            // Relayed by an ingest that lost the stream's encoder: continue its session here.
            Some(from) => this.take_over_lease(&stream, from).await,
            None => {
                this.db
                    .take_stream_lease(stream.id, &this.holder, LEASE_TTL_MS, now)
                    .await
            }
        };
        let lease = match taken {
            Ok(Ok(lease)) => lease,
            Ok(Err(other)) if req.takeover.is_some() => {
                tracing::info!(stream = %stream.id, why = %other, "takeover refused for now");
                return Err(Refusal(other));
            }
            Ok(Err(other)) => {
                tracing::info!(stream = %stream.id, %other, "refused: the stream is live on another node");
                metrics::counter!("oxcast_live_publish_refused_total", "reason" => "elsewhere")
                    .increment(1);
                return Err(Refusal(
                    "this stream is already live on another server of this site".into(),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "taking the stream's lease failed");
                return Err(Refusal("internal error".into()));
            }
        };
        if req.takeover.is_some() {
            if let Err(why) = this.adopt(&stream).await {
                this.release_lease_epoch(stream.id, lease.epoch).await;
                return Err(Refusal(why));
            }
        }
        let place = this
            .reserve(stream.id, &stream.stream_key)
            .inspect_err(|_| {
                metrics::counter!("oxcast_live_publish_refused_total", "reason" => "busy")
                    .increment(1);
            })?;
        this.hold_lease(stream.id, lease.epoch);
        let session = place
            .resumed
            .as_ref()
            .map(|s| s.state.lock().expect("state").session_id.to_string());
        tracing::info!(stream = %stream.id, resumes = session.as_deref(), protocol = req.protocol.as_str(), peer = %req.peer, "publisher accepted; probing its media");
        let span = tracing::info_span!("live", stream = %stream.id);
        let me = this.clone();
        this.tasks.spawn(
            me.run_epoch(stream, place, media, (req.protocol.as_str(), req.peer))
                .instrument(span),
        );
        Ok(())
    }
}

fn stream_id_of(session: &Session) -> StreamId {
    session.state.lock().expect("state").stream_id
}
