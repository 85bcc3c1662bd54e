//! Sessions: key checks, epochs (one per publisher connection), the grace period, the end.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use oxcast_base::clock::SharedClock;
use oxcast_base::{Config, SessionId, StreamId};
use oxcast_db::{Db, LiveStream, Published, Rendition};
use oxcast_ingest::{MediaStream, PublishHandler, PublishRequest, Refusal};
use oxcast_media::compress::Compressible;
use oxcast_media::ladder::{self, LadderSpec, Rung, SourceVideo};
use oxcast_store::{keys, Key, Store};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::encoder::{self, EncoderPlan, EncoderStats, LiveOutput};
use crate::growing::{self, Growing, LiveObject};
use crate::monitor::{MediaMeter, Monitor, Publisher, ViewerBoard};
use crate::package::{package, write_objects, Write};
use crate::probe::{probe_source, Probed, SourceProbe};
use crate::publish::{Signal, TOPIC};
use crate::rendered::Rendered;
use crate::slots::{Reserved, Slot};
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
    title: String,
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
    store: Store,
    pub(crate) config: Arc<Config>,
    pub(crate) clock: SharedClock,
    scratch: PathBuf,
    pub(crate) slots: Mutex<HashMap<StreamId, Slot>>,
    pub(crate) viewers: Mutex<ViewerBoard>,
    pub(crate) shutdown: CancellationToken,
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
        })
    }

    /// Sessions a crashed process left `live` cannot continue, but what they stored is not
    /// lost: each is ended and its stored segments published as its recording.
    pub async fn recover_orphans(&self) -> oxcast_db::Result<()> {
        for s in self.db.orphaned_live_sessions().await? {
            tracing::warn!(session = %s.id, video = %s.video_id, "recovering a live session interrupted by a restart");
            let now = self.clock.now_ms();
            match self.rebuild(&s).await {
                Some(session) => match self.publish_recording(&session).await {
                    Ok(p) => {
                        tracing::info!(
                            duration_s = p.duration_s,
                            "recording of the interrupted session published"
                        );
                        self.db.set_video_ready(s.video_id, &p, now).await?;
                    }
                    Err(why) => self.db.set_video_failed(s.video_id, &why, now).await?,
                },
                None => self
                    .db
                    .set_video_failed(
                        s.video_id,
                        "the server stopped during this live session before anything was recorded",
                        now,
                    )
                    .await?,
            }
            self.db.end_live_session(s.id, now).await?;
        }
        Ok(())
    }

    /// Reads an orphaned session's stored inits and segments back into an ended session.
    async fn rebuild(&self, s: &oxcast_db::LiveSession) -> Option<Arc<Session>> {
        type Files = (Vec<(u32, String)>, Vec<(u64, String)>);
        let prefix = keys::video_prefix(s.video_id);
        let objects = self.store.list(&prefix).await.ok()?;
        let mut by_rendition: std::collections::BTreeMap<String, Files> = Default::default();
        for o in &objects {
            let Some(rel) = o.key.strip_prefix(&format!("{prefix}/")) else {
                continue;
            };
            let Some((rend, file)) = rel.split_once('/') else {
                continue;
            };
            let entry = by_rendition.entry(rend.to_string()).or_default();
            if let Some(e) = file
                .strip_prefix("init-")
                .and_then(|f| f.strip_suffix(".mp4"))
                .and_then(|e| e.parse().ok())
            {
                entry.0.push((e, o.key.clone()));
            } else if let Some(n) = file
                .strip_prefix("seg-")
                .and_then(|f| f.strip_suffix(".m4s"))
                .and_then(|n| n.parse().ok())
            {
                entry.1.push((n, o.key.clone()));
            }
        }
        let mut restored = Vec::new();
        for (name, (mut inits, mut segs)) in by_rendition {
            inits.sort();
            segs.sort();
            let Some(first_init) = inits.first() else {
                continue;
            };
            let init = self
                .store
                .get_bytes(&Key::from(first_init.1.clone()))
                .await
                .ok()?;
            let mut segments: Vec<crate::state::Segment> = Vec::new();
            let (mut epoch, mut prev_end, mut track) = (0u32, 0u64, None);
            for (number, key) in segs {
                let data = self.store.get_bytes(&Key::from(key)).await.ok()?;
                let Ok((t, _, frags)) =
                    oxcast_media::mp4::split_file(&[&init[..], &data[..]].concat())
                else {
                    continue;
                };
                let (Some(first), Some(last)) = (frags.first(), frags.last()) else {
                    continue;
                };
                let ts = t.timescale.max(1);
                // Each publisher connection restarts the encoder's clock.
                if !segments.is_empty()
                    && first.base_media_decode_time + u64::from(ts) / 2 < prev_end
                {
                    epoch += 1;
                }
                prev_end = last.base_media_decode_time + last.duration;
                let ticks = prev_end - first.base_media_decode_time;
                let discontinuity = epoch > 0 && segments.last().is_some_and(|p| p.epoch != epoch);
                segments.push(crate::state::Segment {
                    number,
                    epoch,
                    start_ticks: first.base_media_decode_time,
                    ticks,
                    duration_s: ticks as f64 / f64::from(ts),
                    parts: Vec::new(),
                    discontinuity,
                    pdt_ms: s.started_at,
                    bytes: data.len() as u64,
                });
                track = Some(t);
            }
            if let Some(track) = track {
                restored.push(crate::state::RestoredRendition {
                    name,
                    track,
                    segments,
                });
            }
        }
        if restored.is_empty() {
            return None;
        }
        let (writer, rx) = mpsc::channel(1);
        tokio::spawn(write_objects(self.store.clone(), self.db.clone(), rx));
        Some(Arc::new(Session {
            state: Mutex::new(SessionState::restore(
                s.stream_id,
                s.id,
                s.video_id,
                s.started_at,
                self.config.live.segment_s,
                self.config.live.part_s,
                restored,
            )),
            monitor: Mutex::new(Monitor::new()),
            changed: watch::channel(0).0,
            grown: watch::channel(0).0,
            rendered: Rendered::default(),
            writer,
            title: String::new(),
        }))
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

    /// The stable master playlist of the stream's current session.
    pub fn master(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        let version = *s.changed.borrow();
        s.rendered
            .master(version, || {
                let st = s.state.lock().expect("state");
                st.master(&format!("{}/", st.session_id))
            })
            .ok_or(LiveError::Starting)
    }

    pub fn mpd(
        &self,
        stream: StreamId,
        utc_timing_url: &str,
    ) -> Result<Arc<Compressible>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        let version = *s.changed.borrow();
        let now = self.clock.now_ms();
        s.rendered
            .mpd(version, now.div_euclid(1000), || {
                let st = s.state.lock().expect("state");
                st.mpd(&format!("{}/", st.session_id), utc_timing_url, now)
            })
            .ok_or(LiveError::Starting)
    }

    fn session_for(&self, stream: StreamId, session: SessionId) -> Result<Arc<Session>, LiveError> {
        let s = self.session(stream).ok_or(LiveError::NotLive)?;
        if s.state.lock().expect("state").session_id != session {
            return Err(LiveError::NotFound("session".into()));
        }
        Ok(s)
    }

    /// A rendition's media playlist. With `msn` it is a blocking reload: held until segment
    /// `msn` (part `part`) exists, or the session ends, or three target durations pass.
    pub async fn media_playlist(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        msn: Option<u64>,
        part: Option<u64>,
        skip: bool,
    ) -> Result<Arc<Compressible>, LiveError> {
        if part.is_some() && msn.is_none() {
            return Err(LiveError::BadRequest("_HLS_part requires _HLS_msn".into()));
        }
        let s = self.session_for(stream, session)?;
        let mut changed = s.changed.subscribe();
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs_f64(3.0 * self.config.live.segment_s.max(1.0));
        loop {
            // Read before the snapshot: any change after this wakes `changed` below.
            let version = *changed.borrow_and_update();
            let snap = s
                .rendered
                .media(&s.state, rendition, version)
                .ok_or_else(|| LiveError::NotFound(format!("rendition {rendition}")))?;
            if snap.answers(msn, part)? {
                return Ok(snap.body(skip));
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return Err(LiveError::NotLive) },
                _ = tokio::time::sleep_until(deadline) => return Err(LiveError::Timeout),
            }
        }
    }

    /// An init, part or segment of the current session: from memory while hot, else the store.
    pub async fn object(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        file: &str,
    ) -> Result<LiveObject, LiveError> {
        let s = self.session_for(stream, session)?;
        // The segment in progress (low-latency DASH) and the part the preload hint names
        // (LL-HLS) are sent as they are written; the next ones are held until they start.
        if let Some(what) = Growing::of(file) {
            let hold = Duration::from_secs_f64(self.config.live.segment_s.max(1.0));
            if let Some(o) = growing::open(s.clone(), rendition.to_string(), what, hold).await {
                return Ok(o);
            }
        }
        let video = {
            let st = s.state.lock().expect("state");
            if let Some(b) = st.hot(rendition, file) {
                return Ok(LiveObject::Whole(b));
            }
            st.video_id
        };
        let key = keys::video_object(video, &format!("{rendition}/{file}"))
            .map_err(|_| LiveError::NotFound(file.into()))?;
        match self.store.get_bytes(&key).await {
            Ok(b) => Ok(LiveObject::Whole(b)),
            Err(oxcast_store::Error::NotFound(_)) => Err(LiveError::NotFound(file.into())),
            Err(e) => Err(e.into()),
        }
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
    }

    /// Starts a session and the video row of its recording.
    async fn open_session(&self, stream: &LiveStream) -> Result<Arc<Session>, String> {
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
        let (writer, rx) = mpsc::channel(256);
        tokio::spawn(write_objects(self.store.clone(), self.db.clone(), rx));
        let session = Arc::new(Session {
            state: Mutex::new(SessionState::new(
                stream.id,
                row.id,
                row.video_id,
                now,
                self.config.live.segment_s,
                self.config.live.part_s,
            )),
            monitor: Mutex::new(Monitor::new()),
            changed: watch::channel(0).0,
            grown: watch::channel(0).0,
            rendered: Rendered::default(),
            writer,
            title,
        });
        if let Some(slot) = self.slots.lock().expect("slots").get_mut(&stream.id) {
            slot.session = Some(session.clone());
        }
        metrics::gauge!("oxcast_live_sessions_active").increment(1.0);
        tracing::info!(session = %row.id, video = %row.video_id, "live session started");
        self.signal(Signal::Stream(stream.id)).await;
        Ok(session)
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
                                tokio::spawn(self.clone().run_monitor(session.clone(), stream));
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
            Err(why) => Err(why),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, "live epoch ended with an error");
        }
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
        let actions = self.step(stream, Event::Gone { generation, now });
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
    }

    /// Buffers the start of the media until ffprobe can tell the picture size for the ladder.
    /// Probes early and again with more data: the first bytes usually carry the codec headers.
    async fn probe_head(&self, media: &mut MediaStream) -> Result<Head, String> {
        let mut head: Vec<u8> = Vec::new();
        let mut first_at = None;
        let deadline = tokio::time::Instant::now() + PROBE_WAIT;
        let mut next_probe = 48 * 1024;
        let mut probe = Probed::Unreadable;
        loop {
            let mut closed = false;
            tokio::select! {
                chunk = media.rx.recv() => match chunk {
                    Some(c) => {
                        // Latency is measured from when media arrives, not from the handshake.
                        first_at.get_or_insert_with(|| self.clock.now_ms());
                        head.extend_from_slice(&c);
                    }
                    None => closed = true,
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
            let timed_out = tokio::time::Instant::now() >= deadline;
            if head.len() >= next_probe || closed || timed_out {
                if !head.is_empty() {
                    probe =
                        probe_source(&self.config.transcode.ffprobe, media.container, &head).await;
                }
                if matches!(probe, Probed::Video(_)) || closed || timed_out || head.len() >= 4 << 20
                {
                    break;
                }
                next_probe = head.len() * 4;
            }
        }
        match probe {
            Probed::Video(probe) => Ok(Head {
                probe,
                bytes: head,
                first_at: first_at.unwrap_or_else(|| self.clock.now_ms()),
            }),
            other => Err(other.refusal(head.len(), PROBE_WAIT)),
        }
    }

    async fn encode_epoch(
        &self,
        session: &Arc<Session>,
        mut media: MediaStream,
        head: Head,
        kick: CancellationToken,
    ) -> Result<(), String> {
        let Head {
            probe,
            bytes: head,
            first_at,
        } = head;
        session.state.lock().expect("state").health.ingest_bytes += head.len() as u64;
        let mut meter = MediaMeter::new(media.container, session.clone(), self.clock.clone());
        meter.on_chunk(&head);

        let cfg = &self.config.live;
        let (rungs, epoch, session_id) = {
            let mut st = session.state.lock().expect("state");
            if st.renditions.is_empty() {
                let mut rungs = live_ladder(&probe.source, cfg);
                if cfg.passthrough {
                    let (w, h) = ladder::display_size(&probe.source);
                    rungs.insert(
                        0,
                        Rung {
                            name: "source".into(),
                            width: w,
                            height: h,
                            video_bitrate: 0,
                            max_bitrate: 0,
                            buffer_size: 0,
                        },
                    );
                }
                st.set_renditions(&rungs, probe.has_audio);
                st.source_captions = probe.closed_captions;
                st.dvr_window_s = cfg.dvr_window_s;
            }
            session.monitor.lock().expect("monitor").top_kbps = st
                .renditions
                .iter()
                .filter_map(|r| r.rung.as_ref())
                .map(|r| f64::from(r.video_bitrate) / 1000.0)
                .reduce(f64::max)
                .filter(|k| *k > 0.0);
            st.publishing = true;
            let rungs: Vec<Rung> = st
                .renditions
                .iter()
                .filter_map(|r| r.rung.clone())
                .collect();
            let audio = st.renditions.iter().any(|r| r.rung.is_none());
            (rungs, st.begin_epoch(first_at), (st.session_id, audio))
        };
        let (session_id, audio) = session_id;
        let dir = self.scratch.join(format!("{session_id}-{epoch}"));
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        let mut outputs: Vec<LiveOutput> = rungs
            .iter()
            .map(|r| LiveOutput {
                name: r.name.clone(),
                passthrough: r.name == "source",
                rung: Some(r.clone()),
                fifo: dir.join(format!("{}.mp4", r.name)),
            })
            .collect();
        if audio && probe.has_audio {
            outputs.push(LiveOutput {
                name: AUDIO.into(),
                rung: None,
                passthrough: false,
                fifo: dir.join("audio.mp4"),
            });
        }
        let plan = EncoderPlan {
            container: media.container,
            outputs: outputs.clone(),
            has_audio: probe.has_audio,
            preset: cfg.preset.clone(),
            segment_s: cfg.segment_s,
            part_s: cfg.part_s,
            frame_rate: probe.frame_rate,
        };
        // A FIFO opened for reading blocks until ffmpeg opens it for writing; opening it that
        // way (not non-blocking) is what makes ffmpeg closing it read as end of stream.
        let mut readers = Vec::new();
        for o in &outputs {
            encoder::mkfifo(&o.fifo).map_err(|e| format!("mkfifo: {e}"))?;
            let path = o.fifo.clone();
            readers.push((
                o.name.clone(),
                tokio::task::spawn_blocking(move || std::fs::File::open(path)),
            ));
        }
        let mut child = encoder::spawn(&self.config.transcode.ffmpeg, &plan)
            .map_err(|e| format!("starting ffmpeg: {e}"))?;
        tracing::info!(
            epoch,
            renditions = outputs.len(),
            width = probe.source.width,
            height = probe.source.height,
            "live encoder started"
        );

        let mut stdin = child.stdin.take().expect("piped");
        let pump_session = session.clone();
        // Ends with the publisher, or when it is disconnected (`kick`: its media stream is
        // dropped, which closes its connection); the encoder then drains and exits.
        tokio::spawn(async move {
            if stdin.write_all(&head).await.is_err() {
                return;
            }
            loop {
                let chunk = tokio::select! {
                    c = media.rx.recv() => match c {
                        Some(c) => c,
                        None => break,
                    },
                    _ = kick.cancelled() => {
                        tracing::info!("publisher disconnected by the server");
                        break;
                    }
                };
                pump_session
                    .state
                    .lock()
                    .expect("state")
                    .health
                    .ingest_bytes += chunk.len() as u64;
                metrics::counter!("oxcast_live_ingest_bytes_total").increment(chunk.len() as u64);
                meter.on_chunk(&chunk);
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            drop(media);
            let _ = stdin.shutdown().await;
        });

        let stderr = child.stderr.take().expect("piped");
        let stats_session = session.clone();
        let stats = tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut stats = EncoderStats::default();
            let mut errors = Vec::new();
            // ffmpeg's own fps and speed average over the whole run and hide a slowdown;
            // report rates over the last couple of seconds instead.
            let mut window: Option<(std::time::Instant, f64, u64)> = None;
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains('=') && !line.contains(' ') {
                    if stats.apply(&line) {
                        let now = std::time::Instant::now();
                        let (t0, out0, frames0) =
                            *window.get_or_insert((now, stats.out_time_s, stats.frames));
                        let dt = now.duration_since(t0).as_secs_f64();
                        if dt >= 2.0 {
                            let speed = (stats.out_time_s - out0) / dt;
                            let fps = stats.frames.saturating_sub(frames0) as f64 / dt;
                            let mut st = stats_session.state.lock().expect("state");
                            st.health.fps = (fps * 10.0).round() / 10.0;
                            st.health.encoder_speed = (speed * 100.0).round() / 100.0;
                            metrics::gauge!("oxcast_live_encoder_speed").set(speed);
                            window = Some((now, stats.out_time_s, stats.frames));
                        }
                        stats_session
                            .state
                            .lock()
                            .expect("state")
                            .health
                            .dropped_frames = stats.dropped_frames;
                    }
                } else if errors.len() < 20 {
                    errors.push(line);
                }
            }
            errors
        });

        let mut packagers = Vec::new();
        for (name, rx) in readers {
            let s = session.clone();
            let span = tracing::info_span!("rendition", %name);
            packagers.push(tokio::spawn(
                package(s, name, rx, epoch, first_at, self.clock.clone()).instrument(span),
            ));
        }
        let status = child.wait().await.map_err(|e| e.to_string())?;
        // If ffmpeg died before opening an output, release the reader blocked in open().
        for o in &outputs {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&o.fifo);
        }
        for p in packagers {
            let _ = p.await;
        }
        let errors = stats.await.unwrap_or_default();
        if !status.success() && !errors.is_empty() {
            return Err(format!("encoder exited ({status}): {}", errors.join(" | ")));
        }
        Ok(())
    }

    /// Ends a session: last playlists get ENDLIST, the recording is written as VOD and
    /// published. Idempotent.
    pub(crate) async fn finish(&self, session: &Arc<Session>) {
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
                let name = r.name.clone();
                rest.extend(r.close(wall).into_writes().map(|w| (name.clone(), w)));
            }
            st.ended = true;
            st.publishing = false;
            (st.video_id, rest)
        };
        for (name, (file, data)) in segments {
            if let Ok(k) = keys::video_object(video, &format!("{name}/{file}")) {
                let _ = session.writer.send(Write::Put(k, data)).await;
            }
        }
        session.bump();
        session.publish_all(self.clock.now_ms()).await;
        self.forget_viewers(stream_id_of(session));
        metrics::gauge!("oxcast_live_sessions_active").decrement(1.0);
        let (tx, rx) = oneshot::channel();
        let _ = session.writer.send(Write::Flush(tx)).await;
        let _ = rx.await;
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
        self.signal(Signal::Stream(stream_id_of(session))).await;
        tracing::info!(title = %session.title, "session finished");
    }

    /// Tells other nodes, which otherwise notice within their cache's lifetime.
    async fn signal(&self, signal: Signal) {
        if let Err(e) = self.db.notify(TOPIC, &signal.payload()).await {
            tracing::warn!(error = %e, "signalling a live change failed");
        }
    }

    async fn publish_recording(&self, session: &Arc<Session>) -> Result<Published, String> {
        let (video, files, published, top) = {
            let st = session.state.lock().expect("state");
            let mut files: Vec<(String, String)> = Vec::new();
            for r in &st.renditions {
                if let Some(pl) = st.playlist(&r.name) {
                    files.push((format!("{}/index.m3u8", r.name), pl.render(false)));
                }
            }
            let master = st.master("").ok_or("no media was received")?;
            files.push(("master.m3u8".into(), master));
            let mpd = st
                .mpd("", "/time", self.clock.now_ms())
                .ok_or("no media was received")?;
            files.push(("manifest.mpd".into(), mpd));
            let top = st
                .renditions
                .iter()
                .find(|r| r.rung.is_some())
                .ok_or("no video was received")?;
            let duration_s: f64 = top.segments.iter().map(|s| s.duration_s).sum();
            if top.segments.is_empty() {
                return Err("no complete segment was received".into());
            }
            let audio = st.renditions.iter().find(|r| r.rung.is_none());
            let audio_bw = audio.map_or(0, |a| a.bandwidth());
            let published = Published {
                duration_s,
                width: top.track.as_ref().and_then(|t| t.width).unwrap_or(0),
                height: top.track.as_ref().and_then(|t| t.height).unwrap_or(0),
                renditions: st
                    .renditions
                    .iter()
                    .filter_map(|r| {
                        let t = r.track.as_ref()?;
                        let rung = r.rung.as_ref()?;
                        Some(Rendition {
                            name: r.name.clone(),
                            width: t.width.unwrap_or(rung.width),
                            height: t.height.unwrap_or(rung.height),
                            bandwidth: r.bandwidth() + audio_bw,
                            codecs: match audio.and_then(|a| a.track.as_ref()) {
                                Some(a) => format!("{},{}", t.codec, a.codec),
                                None => t.codec.clone(),
                            },
                        })
                    })
                    .collect(),
            };
            let first = top.segments.first().expect("checked");
            let top = (top.name.clone(), first.epoch, first.number);
            (st.video_id, files, published, top)
        };
        for (name, text) in files {
            let key = keys::video_object(video, &name).map_err(|e| e.to_string())?;
            self.store
                .put(&key, Bytes::from(text))
                .await
                .map_err(|e| e.to_string())?;
        }
        // Parts duplicate the segments' bytes; the recording needs only segments.
        if let Ok(objects) = self.store.list(&keys::video_prefix(video)).await {
            for o in objects.iter().filter(|o| o.key.contains("/part-")) {
                let _ = self.store.delete(&Key::from(o.key.clone())).await;
            }
        }
        if let Err(e) = self.poster(video, &top.0, top.1, top.2).await {
            tracing::warn!(error = %e, "no poster for the recording");
        }
        Ok(published)
    }

    /// A poster from the first segment of the top rendition.
    async fn poster(
        &self,
        video: oxcast_base::VideoId,
        rendition: &str,
        epoch: u32,
        number: u64,
    ) -> Result<(), String> {
        let init = self
            .store
            .get_bytes(
                &keys::video_object(video, &format!("{rendition}/init-{epoch}.mp4"))
                    .map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        let seg = self
            .store
            .get_bytes(
                &keys::video_object(video, &format!("{rendition}/seg-{number}.m4s"))
                    .map_err(|e| e.to_string())?,
            )
            .await
            .map_err(|e| e.to_string())?;
        let dir = self.scratch.join(format!("poster-{video}"));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| e.to_string())?;
        let src = dir.join("first.mp4");
        tokio::fs::write(&src, [&init[..], &seg[..]].concat())
            .await
            .map_err(|e| e.to_string())?;
        let out = dir.join("poster.jpg");
        let mut args: Vec<String> = ["-hide_banner", "-nostdin", "-y", "-v", "error"]
            .map(String::from)
            .to_vec();
        args.extend(oxcast_transcode::Input::File(src).args());
        args.extend(["-frames:v", "1", "-q:v", "3", "-f", "image2"].map(String::from));
        args.push(out.display().to_string());
        // Through the transcode crate's builder: killed with us, even by SIGKILL.
        let status = oxcast_transcode::command(&self.config.transcode.ffmpeg)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if status.success() {
            self.store
                .put_file(
                    &keys::video_object(video, "poster.jpg").map_err(|e| e.to_string())?,
                    &out,
                )
                .await
                .map_err(|e| e.to_string())?;
        }
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(())
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
        let place = this
            .reserve(stream.id, &stream.stream_key)
            .inspect_err(|_| {
                metrics::counter!("oxcast_live_publish_refused_total", "reason" => "busy")
                    .increment(1);
            })?;
        let session = place
            .resumed
            .as_ref()
            .map(|s| s.state.lock().expect("state").session_id.to_string());
        tracing::info!(stream = %stream.id, resumes = session.as_deref(), protocol = req.protocol.as_str(), peer = %req.peer, "publisher accepted; probing its media");
        let span = tracing::info_span!("live", stream = %stream.id);
        let me = this.clone();
        tokio::spawn(
            me.run_epoch(stream, place, media, (req.protocol.as_str(), req.peer))
                .instrument(span),
        );
        Ok(())
    }
}

fn stream_id_of(session: &Session) -> StreamId {
    session.state.lock().expect("state").stream_id
}
