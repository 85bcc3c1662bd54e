//! The ingest node's side of the relay: each publisher's media forwarded to a live encoder, and
//! moved to another encoder when that one is lost, while the publisher stays connected.

use std::sync::Arc;
use std::time::Duration;

use oxcast_base::clock::SharedClock;
use tokio::io::BufWriter;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::head::Head;
use super::wire::{self, Hello, Takeover};
use super::{read_frame, write_frame};
use crate::{Container, MediaStream, PublishHandler, PublishRequest, Refusal};

/// A live encoder to relay to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its lease holder name.
    pub holder: String,
    /// `host:port` of its relay listener.
    pub addr: String,
}

/// Where a stream should go now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Encoders to try, best first.
    pub targets: Vec<Target>,
    /// The encoder that holds the stream but is gone, to take it over from.
    pub takeover: Option<Takeover>,
}

/// The internal load balancer: which encoders may take a stream.
#[async_trait::async_trait]
pub trait Encoders: Send + Sync + 'static {
    /// Encoders for the stream of `key`, best first (the one holding its session, then the
    /// least loaded), never `lost`. Err: the key may not publish at all.
    async fn route(&self, key: &str, lost: Option<&str>) -> Result<Route, Refusal>;
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The deployment's signing key.
    pub secret: Vec<u8>,
    /// Connecting to one encoder.
    pub connect_timeout: Duration,
    /// An encoder's answer to a hello (a takeover may wait for the old encoder's fence).
    pub answer_timeout: Duration,
    /// An encoder that says nothing for this long is lost.
    pub silence: Duration,
    /// How long a lost stream looks for a new encoder before its publisher is dropped.
    pub failover_for: Duration,
    /// Bytes kept since the last keyframe for a new encoder.
    pub head_max: usize,
}

impl RelayConfig {
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            connect_timeout: Duration::from_secs(1),
            answer_timeout: Duration::from_secs(8),
            silence: Duration::from_millis(1500),
            failover_for: Duration::from_secs(10),
            head_max: 32 << 20,
        }
    }
}

/// A [`PublishHandler`] for ingest nodes: every publisher is relayed to a live encoder.
pub struct Relay {
    encoders: Arc<dyn Encoders>,
    cfg: RelayConfig,
    clock: SharedClock,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

enum FromEncoder {
    Alive,
    End(String),
    Closed,
}

/// A connection to an encoder that accepted a stream.
struct Link {
    holder: String,
    wr: BufWriter<OwnedWriteHalf>,
    events: mpsc::Receiver<FromEncoder>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Relay {
    pub fn new(
        encoders: Arc<dyn Encoders>,
        cfg: RelayConfig,
        clock: SharedClock,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            encoders,
            cfg,
            clock,
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    /// Waits for every forwarded stream to end (after the shutdown token is cancelled).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Tries the route's encoders in order. Err(refusal): an encoder refused the stream, or none
    /// could be reached.
    async fn connect(
        &self,
        req: &PublishRequest,
        container: Container,
        route: &Route,
    ) -> Result<Link, Refusal> {
        let hello = Hello {
            key: req.key.clone(),
            protocol: req.protocol.as_str().into(),
            peer: req.peer.to_string(),
            container: match container {
                Container::Flv => "flv",
                Container::MpegTs => "mpegts",
            }
            .into(),
            takeover: route.takeover.clone(),
            at_ms: self.clock.now_ms(),
            mac: String::new(),
        }
        .sign(&self.cfg.secret)
        .encode();
        for t in &route.targets {
            match self.try_target(t, &hello).await {
                Ok(Ok(link)) => return Ok(link),
                Ok(Err(refusal)) => return Err(refusal),
                Err(e) => {
                    tracing::warn!(encoder = %t.holder, addr = %t.addr, error = %e, "live encoder unreachable; trying the next")
                }
            }
        }
        Err(Refusal(
            "no live encoder is available; try again shortly".into(),
        ))
    }

    async fn try_target(&self, t: &Target, hello: &[u8]) -> std::io::Result<Result<Link, Refusal>> {
        let socket = tokio::time::timeout(self.cfg.connect_timeout, TcpStream::connect(&t.addr))
            .await
            .map_err(|_| super::io_err("connect timed out"))??;
        socket.set_nodelay(true)?;
        let (mut rd, wr) = socket.into_split();
        let mut wr = BufWriter::new(wr);
        write_frame(&mut wr, wire::HELLO, hello).await?;
        let answer = tokio::time::timeout(self.cfg.answer_timeout, read_frame(&mut rd))
            .await
            .map_err(|_| super::io_err("no answer in time"))??;
        let holder = match answer {
            Some((wire::ACCEPT, body)) => serde_json::from_slice::<wire::Accept>(&body)
                .map(|a| a.holder)
                .unwrap_or_else(|_| t.holder.clone()),
            Some((wire::REFUSE, body)) => {
                return Ok(Err(Refusal(String::from_utf8_lossy(&body).into_owned())))
            }
            _ => return Err(super::io_err("no valid answer")),
        };
        let (tx, events) = mpsc::channel(16);
        let reader = tokio::spawn(async move {
            loop {
                let ev = match read_frame(&mut rd).await {
                    Ok(Some((wire::ALIVE, _))) => FromEncoder::Alive,
                    Ok(Some((wire::END, why))) => {
                        FromEncoder::End(String::from_utf8_lossy(&why).into_owned())
                    }
                    _ => FromEncoder::Closed,
                };
                let last = !matches!(ev, FromEncoder::Alive);
                if tx.send(ev).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Ok(Link {
            holder,
            wr,
            events,
            reader,
        }))
    }

    /// Forwards one publisher until it or its stream ends.
    async fn forward(self: Arc<Self>, req: PublishRequest, mut media: MediaStream, link: Link) {
        let mut head = Head::new(media.container, self.cfg.head_max);
        let mut link = Some(link);
        let mut last_alive = Instant::now();
        loop {
            let Some(l) = link.as_mut() else {
                return;
            };
            let lost = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                ev = l.events.recv() => match ev {
                    Some(FromEncoder::Alive) => { last_alive = Instant::now(); continue }
                    Some(FromEncoder::End(why)) => {
                        tracing::info!(%why, "the encoder ended the stream; disconnecting the publisher");
                        return;
                    }
                    Some(FromEncoder::Closed) | None => Takeover { holder: l.holder.clone(), gone: true },
                },
                chunk = media.rx.recv() => match chunk {
                    Some(c) => {
                        head.push(&c);
                        match tokio::time::timeout(self.cfg.silence, write_frame(&mut l.wr, wire::MEDIA, &c)).await {
                            Ok(Ok(())) => continue,
                            // Written into a closed connection: the encoder is gone.
                            Ok(Err(_)) => Takeover { holder: l.holder.clone(), gone: true },
                            Err(_) => Takeover { holder: l.holder.clone(), gone: false },
                        }
                    }
                    None => {
                        let _ = tokio::time::timeout(Duration::from_secs(1), write_frame(&mut l.wr, wire::DONE, &[])).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(last_alive + self.cfg.silence) => {
                    Takeover { holder: l.holder.clone(), gone: false }
                }
            };
            metrics::counter!("oxcast_ingest_encoder_lost_total").increment(1);
            tracing::warn!(encoder = %lost.holder, gone = lost.gone, "lost the live encoder; moving the stream");
            link = self.failover(&req, &mut media, &mut head, lost).await;
            last_alive = Instant::now();
        }
    }

    /// Finds a new encoder for a stream whose encoder was lost, taking in the publisher's media
    /// meanwhile; the new encoder gets [`Head::replay`] first. `None`: the publisher is dropped.
    async fn failover(
        &self,
        req: &PublishRequest,
        media: &mut MediaStream,
        head: &mut Head,
        lost: Takeover,
    ) -> Option<Link> {
        let started = Instant::now();
        let deadline = started + self.cfg.failover_for;
        while Instant::now() < deadline {
            let attempt = async {
                let mut route = self.encoders.route(&req.key, Some(&lost.holder)).await?;
                route.takeover = Some(lost.clone());
                self.connect(req, media.container, &route).await
            };
            tokio::pin!(attempt);
            let result = loop {
                tokio::select! {
                    r = &mut attempt => break Some(r),
                    c = media.rx.recv() => match c {
                        Some(c) => head.push(&c),
                        None => return None,
                    },
                    _ = self.shutdown.cancelled() => return None,
                }
            };
            match result {
                Some(Ok(mut link)) => {
                    for c in head.replay() {
                        if write_frame(&mut link.wr, wire::MEDIA, &c).await.is_err() {
                            break;
                        }
                    }
                    tracing::info!(encoder = %link.holder, after_ms = started.elapsed().as_millis() as u64, "stream moved to another live encoder");
                    metrics::counter!("oxcast_ingest_encoder_failovers_total").increment(1);
                    return Some(link);
                }
                Some(Err(refusal)) => {
                    tracing::warn!(%refusal, "no encoder took the stream over yet");
                }
                None => {}
            }
            let pause = tokio::time::sleep(Duration::from_millis(300));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    c = media.rx.recv() => match c {
                        Some(c) => head.push(&c),
                        None => return None,
                    },
                }
            }
        }
        tracing::error!("no live encoder took the stream over; disconnecting the publisher");
        None
    }
}

#[async_trait::async_trait]
impl PublishHandler for Arc<Relay> {
    async fn publish(&self, req: PublishRequest, media: MediaStream) -> Result<(), Refusal> {
        let route = self.encoders.route(&req.key, None).await?;
        let link = self.connect(&req, media.container, &route).await?;
        tracing::info!(encoder = %link.holder, "publisher relayed to a live encoder");
        let span = tracing::info_span!("relayed", key = %crate::key_fingerprint(&req.key));
        let me = self.clone();
        self.tasks
            .spawn(me.forward(req, media, link).instrument(span));
        Ok(())
    }
}
