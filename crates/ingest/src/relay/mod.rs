//! The relay between ingest nodes and live encoders, for deployments whose roles are split.
//!
//! An `ingest` node accepts RTMP and SRT publishers ([`crate::serve_rtmp`], [`crate::serve_srt`])
//! and hands each to a [`Relay`], which chooses a live encoder ([`Encoders`], the internal load
//! balancer), connects to it over TCP and forwards the publisher's container bytes. A `live`
//! node runs [`serve_relay`], which turns each relayed stream back into a [`PublishRequest`]
//! and a [`MediaStream`] for its own [`PublishHandler`]: to the encoder a relayed publisher is
//! a publisher like any other.
//!
//! When the encoder is lost (its connection closes, or it stops saying it is alive for
//! [`RelayConfig::silence`]), the relay moves the stream to another encoder while the publisher
//! stays connected: it names the lost encoder in its hello ([`wire::Takeover`]) and starts with
//! what the new encoder needs to decode at once ([`head::Head`]). The encoder decides, with the
//! stream's lease, when taking over is safe.
//!
//! Hellos are signed with the deployment's signing key, so that nothing but an ingest node of
//! the deployment can hand a stream to an encoder or take one over.

mod forward;
pub mod head;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oxcast_base::clock::SharedClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use forward::{Encoders, Relay, RelayConfig, Route, Target};
pub use wire::Takeover;

use crate::{Container, MediaStream, Protocol, PublishHandler, PublishRequest};

/// What a live encoder's relay listener needs.
#[derive(Clone)]
pub struct RelayServer {
    /// The deployment's signing key: hellos signed with anything else are refused.
    pub secret: Vec<u8>,
    /// This encoder's lease holder name, told to the ingest for a later takeover.
    pub holder: String,
    pub clock: SharedClock,
    /// The hello and the handler's decision must come within this.
    pub handshake_timeout: Duration,
    /// An encoder that takes no chunk for this long ends the stream.
    pub stall_timeout: Duration,
    pub channel_capacity: usize,
}

/// Accepts relayed streams until `shutdown`; returns once every connection has ended. At
/// `shutdown` each connection closes without an end frame, so its ingest moves the stream to
/// another encoder: cancel it once this encoder's sessions are handed off (no longer written
/// here), not before.
pub async fn serve_relay(
    listener: TcpListener,
    handler: Arc<dyn PublishHandler>,
    server: RelayServer,
    shutdown: CancellationToken,
) {
    let tasks = TaskTracker::new();
    loop {
        let (socket, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let (handler, server, token) = (handler.clone(), server.clone(), shutdown.clone());
        let span = tracing::info_span!("relay", %from, key = tracing::field::Empty);
        tasks.spawn(
            async move {
                if let Err(e) = relayed(socket, handler, server, token).await {
                    tracing::info!(error = %e, "relayed stream ended");
                }
            }
            .instrument(span),
        );
    }
    tasks.close();
    tasks.wait().await;
}

/// How the ingest's side of a relayed stream ended.
enum Upstream {
    /// The publisher disconnected.
    Done,
    /// The ingest node went away (or sent garbage).
    Lost(String),
    /// The encoder stopped taking media (it ended the stream).
    ConsumerGone,
    /// This encoder is stopping and handed its sessions off: the ingest is to move the stream
    /// to another encoder, so the connection just closes.
    Handoff,
}

async fn relayed(
    socket: TcpStream,
    handler: Arc<dyn PublishHandler>,
    server: RelayServer,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let (mut rd, mut wr) = socket.into_split();
    let hello = tokio::time::timeout(server.handshake_timeout, read_frame(&mut rd))
        .await
        .map_err(|_| io_err("no relay hello in time"))??;
    let hello = match hello {
        Some((wire::HELLO, body)) => {
            wire::Hello::verify(&body, &server.secret, server.clock.now_ms())
        }
        _ => Err(wire::WireError::BadHello(
            "the first frame is not a hello".into(),
        )),
    };
    let hello = match hello {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(error = %e, "relay connection refused");
            write_frame(&mut wr, wire::REFUSE, e.to_string().as_bytes()).await?;
            return Ok(());
        }
    };
    tracing::Span::current().record("key", crate::key_fingerprint(&hello.key).as_str());
    let (protocol, container, peer) = match (
        hello.protocol.as_str(),
        hello.container.as_str(),
        hello.peer.parse::<SocketAddr>(),
    ) {
        ("rtmp", "flv", Ok(peer)) => (Protocol::Rtmp, Container::Flv, peer),
        ("srt", "mpegts", Ok(peer)) => (Protocol::Srt, Container::MpegTs, peer),
        _ => {
            write_frame(&mut wr, wire::REFUSE, b"unknown protocol or container").await?;
            return Ok(());
        }
    };
    let (tx, rx) = mpsc::channel(server.channel_capacity.max(1));
    let req = PublishRequest {
        key: hello.key,
        protocol,
        peer,
        takeover: hello.takeover,
    };
    let media = MediaStream { container, rx };
    if let Err(refusal) = crate::ask_handler(&handler, req, media, server.handshake_timeout).await {
        write_frame(&mut wr, wire::REFUSE, refusal.0.as_bytes()).await?;
        return Ok(());
    }
    let accept = serde_json::to_vec(&wire::Accept {
        holder: server.holder.clone(),
    })
    .expect("plain data");
    write_frame(&mut wr, wire::ACCEPT, &accept).await?;

    // Media in on its own task; this one says "alive" until either side ends.
    let (ended_tx, mut ended) = oneshot::channel();
    let (stall, token) = (server.stall_timeout, shutdown.clone());
    let reader = tokio::spawn(async move {
        let why = loop {
            match read_frame(&mut rd).await {
                Ok(Some((wire::MEDIA, body))) => {
                    crate::count_media(protocol, body.len(), 1);
                    if crate::send_media(&tx, body, stall, &token).await.is_err() {
                        break Upstream::ConsumerGone;
                    }
                }
                Ok(Some((wire::DONE, _))) => break Upstream::Done,
                Ok(Some((kind, _))) => break Upstream::Lost(format!("unexpected frame {kind}")),
                Ok(None) => break Upstream::Lost("the ingest closed the connection".into()),
                Err(e) => break Upstream::Lost(e.to_string()),
            }
        };
        let _ = ended_tx.send(why);
    });
    let mut alive = tokio::time::interval(wire::ALIVE_EVERY);
    let end = loop {
        tokio::select! {
            why = &mut ended => break why.ok(),
            _ = alive.tick() => {
                if write_frame(&mut wr, wire::ALIVE, &[]).await.is_err() {
                    break None;
                }
            }
            _ = shutdown.cancelled() => break Some(Upstream::Handoff),
        }
    };
    reader.abort();
    // The reader gives up on the same shutdown: that is a handoff too, not an end.
    let end = if shutdown.is_cancelled() {
        Some(Upstream::Handoff)
    } else {
        end
    };
    match end {
        Some(Upstream::ConsumerGone) => {
            // Deliberate: the ingest drops the publisher rather than moving the stream.
            let _ = write_frame(&mut wr, wire::END, b"the encoder ended the stream").await;
            tracing::info!("relayed stream ended by the encoder");
        }
        Some(Upstream::Handoff) => {
            tracing::info!("relayed stream handed back to its ingest: this encoder is stopping")
        }
        Some(Upstream::Done) => tracing::info!("relayed publisher disconnected"),
        Some(Upstream::Lost(why)) => tracing::warn!(%why, "lost the ingest of a relayed stream"),
        None => {}
    }
    let _ = wr.shutdown().await;
    Ok(())
}

fn io_err(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// One frame, or `None` at a clean end of stream.
async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Bytes)>> {
    let mut h = [0u8; wire::HEADER];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (kind, len) = wire::parse_header(h).map_err(|e| io_err(&e.to_string()))?;
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(Some((kind, Bytes::from(body))))
}

async fn write_frame<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    kind: u8,
    body: &[u8],
) -> std::io::Result<()> {
    w.write_all(&wire::header(kind, body.len())).await?;
    w.write_all(body).await?;
    w.flush().await
}
