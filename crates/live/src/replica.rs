//! Serving live streams encoded on another node: playlists, parts and segments from the
//! bucket, woken by the database's change signal ([`crate::publish`] writes both).
//!
//! A node keeps, per session it is asked about, the last published playlist model of each
//! rendition viewers ask for, and answers blocking reloads from it with the same code as the
//! encoder's node ([`Snapshot`]). One task owns the listener and every fetch: a signal for a
//! watched rendition fetches its playlist once however many viewers wait, and a signal that
//! comes while that fetch runs fetches again after it. Signals that may have been lost (the
//! database restarted) re-fetch everything watched, and waiters poll as a last resort, so a
//! lost signal costs latency, never a stuck player.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use oxcast_base::{SessionId, StreamId, VideoId};
use oxcast_db::{Db, Received};
use oxcast_media::compress::Compressible;
use oxcast_store::{keys, Key, Store};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use oxcast_base::clock::SharedClock;
use oxcast_live_core::viewers::{ViewerCounter, WINDOW_MS};

use crate::growing::Growing;
use crate::monitor::MAX_VIEWERS;
use crate::publish::{self, MediaDoc, Signal, TOPIC};
use crate::rendered::Snapshot;
use crate::{LiveError, LiveObject};

/// How long the stream → current session answer is kept without a signal.
const CURRENT_TTL: Duration = Duration::from_secs(1);
/// Manifests (master, MPD) are re-read at least this often.
const MANIFEST_TTL: Duration = Duration::from_secs(2);
/// A session nobody asked about for this long is forgotten.
const IDLE: Duration = Duration::from_secs(60);
/// Hot objects kept for the viewers of this node (parts and segments are immutable).
const OBJECT_CACHE_BYTES: u64 = 128 << 20;

/// A rendition's playlist as last fetched.
#[derive(Clone)]
enum Doc {
    Unknown,
    /// Not published (yet): the rendition does not exist, or has not started.
    Absent,
    Present(Arc<Snapshot>),
}

struct Remote {
    stream: StreamId,
    video: VideoId,
    media: Mutex<HashMap<String, watch::Sender<Doc>>>,
    manifests: tokio::sync::Mutex<Option<Manifests>>,
    used: Mutex<Instant>,
}

struct Manifests {
    at: Instant,
    master: Option<Arc<Compressible>>,
    mpd: Option<Arc<Compressible>>,
}

type Rendition = (SessionId, String);

pub struct Replica {
    db: Db,
    store: Store,
    segment_s: f64,
    part_s: f64,
    current: Mutex<HashMap<StreamId, (Instant, Option<SessionId>)>>,
    sessions: Mutex<HashMap<SessionId, Arc<Remote>>>,
    objects: moka::future::Cache<Key, Bytes>,
    fetch: mpsc::UnboundedSender<Rendition>,
    clock: SharedClock,
    /// This process, as it reports viewer counts (`{node_id}:{pid}`).
    node: String,
    /// Viewers of streams encoded elsewhere whose heartbeats come here.
    viewers: Mutex<HashMap<StreamId, ViewerCounter>>,
}

/// How often this node reports its viewer counts.
const REPORT: Duration = Duration::from_secs(5);

impl Replica {
    /// Starts the replica's task; it ends when `shutdown` is cancelled.
    pub fn start(
        db: Db,
        store: Store,
        config: &oxcast_base::config::LiveConfig,
        clock: SharedClock,
        node: String,
        shutdown: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (fetch, rx) = mpsc::unbounded_channel();
        let objects = moka::future::Cache::builder()
            .max_capacity(OBJECT_CACHE_BYTES)
            .weigher(|_: &Key, b: &Bytes| b.len().min(u32::MAX as usize) as u32)
            .time_to_idle(Duration::from_secs(60))
            .build();
        let replica = Arc::new(Self {
            db: db.clone(),
            store,
            segment_s: config.segment_s.max(1.0),
            part_s: config.part_s.max(0.1),
            current: Mutex::default(),
            sessions: Mutex::default(),
            objects,
            fetch,
            clock,
            node,
            viewers: Mutex::default(),
        });
        let task = tokio::spawn(replica.clone().run(rx, shutdown));
        (replica, task)
    }

    /// The stream's live session, as the database says (kept for [`CURRENT_TTL`], or until
    /// the stream's signal).
    async fn current(&self, stream: StreamId) -> Result<SessionId, LiveError> {
        if let Some((at, s)) = self.current.lock().expect("current").get(&stream) {
            if at.elapsed() < CURRENT_TTL {
                return s.ok_or(LiveError::NotLive);
            }
        }
        let s = self
            .db
            .current_live_session(stream)
            .await
            .map_err(|e| LiveError::Unavailable(e.to_string()))?
            .map(|s| s.id);
        self.current
            .lock()
            .expect("current")
            .insert(stream, (Instant::now(), s));
        s.ok_or(LiveError::NotLive)
    }

    async fn remote(&self, stream: StreamId, session: SessionId) -> Result<Arc<Remote>, LiveError> {
        let known = self
            .sessions
            .lock()
            .expect("sessions")
            .get(&session)
            .cloned();
        let remote = match known {
            Some(r) => r,
            None => {
                let row = self
                    .db
                    .live_session(session)
                    .await
                    .map_err(|e| LiveError::Unavailable(e.to_string()))?
                    .ok_or_else(|| LiveError::NotFound("session".into()))?;
                let r = Arc::new(Remote {
                    stream: row.stream_id,
                    video: row.video_id,
                    media: Mutex::default(),
                    manifests: tokio::sync::Mutex::new(None),
                    used: Mutex::new(Instant::now()),
                });
                self.sessions
                    .lock()
                    .expect("sessions")
                    .entry(session)
                    .or_insert(r)
                    .clone()
            }
        };
        if remote.stream != stream {
            return Err(LiveError::NotFound("session".into()));
        }
        *remote.used.lock().expect("used") = Instant::now();
        Ok(remote)
    }

    /// The watch on a rendition's playlist, fetched now if nobody watched it yet.
    fn watch(&self, session: SessionId, remote: &Remote, rendition: &str) -> watch::Receiver<Doc> {
        let mut media = remote.media.lock().expect("media");
        if let Some(tx) = media.get(rendition) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(Doc::Unknown);
        media.insert(rendition.to_string(), tx);
        let _ = self.fetch.send((session, rendition.to_string()));
        rx
    }

    /// Whether a publisher is connected and whether the session ended, as last published for
    /// any rendition watched here.
    pub fn publishing(&self, session: SessionId) -> Option<(bool, bool)> {
        let remote = self
            .sessions
            .lock()
            .expect("sessions")
            .get(&session)
            .cloned()?;
        let media = remote.media.lock().expect("media");
        media.values().find_map(|tx| match &*tx.borrow() {
            Doc::Present(s) => Some((s.publishing, s.playlist.ended)),
            _ => None,
        })
    }

    /// A heartbeat from viewer `id` of `stream`, encoded on another node: counted here and
    /// reported to it through the database.
    pub async fn viewer_beat(
        &self,
        stream: StreamId,
        id: &str,
        leaving: bool,
    ) -> Result<(), LiveError> {
        self.current(stream).await?;
        let now = self.clock.now_ms();
        let mut viewers = self.viewers.lock().expect("viewers");
        let counter = viewers
            .entry(stream)
            .or_insert_with(|| ViewerCounter::new(WINDOW_MS, MAX_VIEWERS));
        counter.heartbeat(id, leaving, now).map_err(LiveError::from)
    }

    /// Writes this node's counts; a stream whose count reached 0 is reported once more and
    /// then forgotten.
    async fn report_viewers(&self) {
        let now = self.clock.now_ms();
        let counts: Vec<(StreamId, u64)> = {
            let mut viewers = self.viewers.lock().expect("viewers");
            let counts = viewers
                .iter_mut()
                .map(|(s, c)| (*s, c.count(now)))
                .collect::<Vec<_>>();
            viewers.retain(|_, c| c.count(now) > 0);
            counts
        };
        if counts.is_empty() {
            return;
        }
        // Bounded: this runs on the task that wakes blocking reloads.
        let report = self.db.report_viewers(&self.node, &counts, now);
        match tokio::time::timeout(Duration::from_secs(1), report).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "reporting viewer counts failed"),
            Err(_) => tracing::warn!("reporting viewer counts timed out"),
        }
    }

    /// How long a waiter goes without a signal before it asks for a fetch itself.
    fn poll(&self) -> Duration {
        Duration::from_secs_f64((self.part_s * 3.0).max(1.0))
    }

    pub async fn master(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        let session = self.current(stream).await?;
        let remote = self.remote(stream, session).await?;
        self.manifests(&remote).await?.0.ok_or(LiveError::Starting)
    }

    pub async fn mpd(&self, stream: StreamId) -> Result<Arc<Compressible>, LiveError> {
        let session = self.current(stream).await?;
        let remote = self.remote(stream, session).await?;
        self.manifests(&remote).await?.1.ok_or(LiveError::Starting)
    }

    #[allow(clippy::type_complexity)]
    async fn manifests(
        &self,
        remote: &Remote,
    ) -> Result<(Option<Arc<Compressible>>, Option<Arc<Compressible>>), LiveError> {
        // Held while fetching: a herd of requests waits for one fetch.
        let mut m = remote.manifests.lock().await;
        if let Some(m) = &*m {
            if m.at.elapsed() < MANIFEST_TTL {
                return Ok((m.master.clone(), m.mpd.clone()));
            }
        }
        let mut got = [None, None];
        for (i, name) in [publish::MASTER, publish::MPD].into_iter().enumerate() {
            let Some(key) = publish::manifest_key(remote.video, name) else {
                continue;
            };
            got[i] = match self.store.get_bytes(&key).await {
                Ok(b) => Some(Arc::new(Compressible::new(b))),
                Err(oxcast_store::Error::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
        }
        let [master, mpd] = got;
        *m = Some(Manifests {
            at: Instant::now(),
            master: master.clone(),
            mpd: mpd.clone(),
        });
        Ok((master, mpd))
    }

    /// A rendition's media playlist; with `msn` a blocking reload, held until the part exists
    /// or three target durations pass.
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
        let remote = self.remote(stream, session).await?;
        let mut rx = self.watch(session, &remote, rendition);
        let deadline = Instant::now() + Duration::from_secs_f64(3.0 * self.segment_s);
        loop {
            let doc = rx.borrow_and_update().clone();
            let waiting = match doc {
                Doc::Absent => return Err(LiveError::NotFound(format!("rendition {rendition}"))),
                Doc::Present(snap) => {
                    if snap.answers(msn, part)? {
                        return Ok(snap.body(skip));
                    }
                    true
                }
                Doc::Unknown => false,
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(LiveError::NotLive) },
                _ = tokio::time::sleep(self.poll()), if waiting => {
                    let _ = self.fetch.send((session, rendition.to_string()));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(if waiting { LiveError::Timeout } else { LiveError::Starting })
                }
            }
        }
    }

    /// An init, part or segment. A part or segment not stored yet (the preload hint, the
    /// segment low-latency DASH asks for early) is waited for, up to one segment.
    pub async fn object(
        &self,
        stream: StreamId,
        session: SessionId,
        rendition: &str,
        file: &str,
    ) -> Result<LiveObject, LiveError> {
        let remote = self.remote(stream, session).await?;
        let key = keys::video_object(remote.video, &format!("{rendition}/{file}"))
            .map_err(|_| LiveError::NotFound(file.into()))?;
        let mut rx = Growing::of(file).map(|_| self.watch(session, &remote, rendition));
        let deadline = Instant::now() + Duration::from_secs_f64(self.segment_s);
        loop {
            let store = self.store.clone();
            let k = key.clone();
            match self
                .objects
                .try_get_with(key.clone(), async move { store.get_bytes(&k).await })
                .await
            {
                Ok(b) => return Ok(LiveObject::Whole(b)),
                Err(e) if !matches!(*e, oxcast_store::Error::NotFound(_)) => {
                    return Err(LiveError::Unavailable(e.to_string()))
                }
                Err(_) => {}
            }
            let Some(rx) = rx.as_mut() else {
                return Err(LiveError::NotFound(file.into()));
            };
            // Only while something is still coming (or before the playlist was first read).
            let live = match &*rx.borrow_and_update() {
                Doc::Unknown => true,
                Doc::Present(s) => s.publishing && !s.playlist.ended,
                Doc::Absent => false,
            };
            if !live {
                return Err(LiveError::NotFound(file.into()));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Err(LiveError::NotLive) },
                _ = tokio::time::sleep(self.poll()) => {
                    let _ = self.fetch.send((session, rendition.to_string()));
                }
                _ = tokio::time::sleep_until(deadline) => return Err(LiveError::NotFound(file.into())),
            }
        }
    }

    async fn run(
        self: Arc<Self>,
        mut requests: mpsc::UnboundedReceiver<Rendition>,
        stop: CancellationToken,
    ) {
        let mut changes = self.db.changes(&[TOPIC]);
        let mut running: HashSet<Rendition> = HashSet::new();
        let mut again: HashSet<Rendition> = HashSet::new();
        let mut fetches = FuturesUnordered::new();
        let mut sweep = tokio::time::interval(Duration::from_secs(10));
        let mut report = tokio::time::interval(REPORT);
        loop {
            let wanted: Vec<Rendition> = tokio::select! {
                _ = stop.cancelled() => return,
                r = changes.recv() => match r {
                    Received::Change(c) => match Signal::parse(&c.payload) {
                        Some(Signal::Media(s, r)) => vec![(s, r)],
                        Some(Signal::Manifests(s)) => {
                            self.expire_manifests(Some(s));
                            vec![]
                        }
                        Some(Signal::Stream(t)) => {
                            self.current.lock().expect("current").remove(&t);
                            vec![]
                        }
                        None => vec![],
                    },
                    Received::Missed => {
                        self.current.lock().expect("current").clear();
                        self.expire_manifests(None);
                        self.watched()
                    }
                },
                Some(r) = requests.recv() => vec![r],
                Some(done) = fetches.next() => {
                    running.remove(&done);
                    if again.remove(&done) { vec![done] } else { vec![] }
                }
                _ = sweep.tick() => {
                    self.forget_idle();
                    vec![]
                }
                _ = report.tick() => {
                    self.report_viewers().await;
                    vec![]
                }
            };
            for r in wanted {
                let Some(tx) = self.sender(&r) else { continue };
                if running.contains(&r) {
                    again.insert(r);
                    continue;
                }
                running.insert(r.clone());
                fetches.push(self.clone().fetch_media(r, tx));
            }
        }
    }

    fn sender(&self, (session, rendition): &Rendition) -> Option<(VideoId, watch::Sender<Doc>)> {
        let remote = self
            .sessions
            .lock()
            .expect("sessions")
            .get(session)
            .cloned()?;
        let tx = remote
            .media
            .lock()
            .expect("media")
            .get(rendition)
            .cloned()?;
        Some((remote.video, tx))
    }

    fn watched(&self) -> Vec<Rendition> {
        let sessions = self.sessions.lock().expect("sessions");
        sessions
            .iter()
            .flat_map(|(s, r)| {
                let names: Vec<String> = r.media.lock().expect("media").keys().cloned().collect();
                names.into_iter().map(move |n| (*s, n))
            })
            .collect()
    }

    fn expire_manifests(&self, only: Option<SessionId>) {
        let sessions = self.sessions.lock().expect("sessions");
        for (s, r) in sessions.iter() {
            if only.is_none_or(|o| o == *s) {
                if let Ok(mut m) = r.manifests.try_lock() {
                    *m = None;
                }
            }
        }
    }

    fn forget_idle(&self) {
        self.sessions
            .lock()
            .expect("sessions")
            .retain(|_, r| r.used.lock().expect("used").elapsed() < IDLE);
    }

    async fn fetch_media(
        self: Arc<Self>,
        r: Rendition,
        (video, tx): (VideoId, watch::Sender<Doc>),
    ) -> Rendition {
        let Some(key) = publish::media_key(video, &r.1) else {
            tx.send_replace(Doc::Absent);
            return r;
        };
        match self.store.get_bytes(&key).await {
            Ok(b) => match serde_json::from_slice::<MediaDoc>(&b) {
                Ok(doc) => {
                    tx.send_if_modified(|cur| match cur {
                        // Fetches of one rendition are sequential, so a different version is a newer one
                        // (the encoder's counter restarts when the stream moves to another node).
                        Doc::Present(s) if s.version == doc.version => false,
                        _ => {
                            *cur = Doc::Present(Arc::new(Snapshot::new(
                                doc.version,
                                doc.playlist,
                                doc.publishing,
                            )));
                            true
                        }
                    });
                }
                Err(e) => tracing::error!(%key, error = %e, "unreadable published playlist"),
            },
            Err(oxcast_store::Error::NotFound(_)) => {
                tx.send_if_modified(|cur| match cur {
                    Doc::Unknown => {
                        *cur = Doc::Absent;
                        true
                    }
                    _ => false,
                });
            }
            // Kept as it was; the next signal or poll tries again.
            Err(e) => tracing::warn!(%key, error = %e, "fetching a published playlist failed"),
        }
        r
    }
}
