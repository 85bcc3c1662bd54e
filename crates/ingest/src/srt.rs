//! SRT ingest: a listener whose callers name their stream key in the `streamid`; the MPEG-TS
//! payload is passed through unchanged.
//!
//! The SRT protocol is `srt-tokio`'s multiplexed listener: every caller shares one UDP socket
//! and one listener task, and each connection request is accepted or rejected by stream id
//! before the handshake completes. Because the listener task is shared, a connection whose
//! reader stops would eventually stall all SRT publishers; hence the stall timeout on the media
//! channel (see [`IngestConfig::stall_timeout`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use srt_tokio::{
    access::{RejectReason, ServerRejectReason},
    ConnectionRequest, SrtListener, SrtSocket,
};
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::{
    ask_handler, catch_panic, count_connection, count_media, send_media, streamid::parse_stream_id,
    Container, Error, IngestConfig, MediaStream, Outcome, Protocol, PublishHandler, PublishRequest,
    Result,
};

/// Binds UDP `addr` and serves SRT publishers until `shutdown` is cancelled, with default
/// [`IngestConfig`]. Errors only if it cannot bind.
pub async fn serve_srt(
    addr: SocketAddr,
    handler: Arc<dyn PublishHandler>,
    shutdown: CancellationToken,
) -> Result<()> {
    serve_srt_with(addr, handler, shutdown, IngestConfig::default()).await
}

/// [`serve_srt`] with explicit tunables.
pub async fn serve_srt_with(
    addr: SocketAddr,
    handler: Arc<dyn PublishHandler>,
    shutdown: CancellationToken,
    config: IngestConfig,
) -> Result<()> {
    let socket = UdpSocket::bind(addr).await.map_err(|source| Error::Bind {
        protocol: "srt",
        addr,
        source,
    })?;
    serve_srt_socket(socket, handler, shutdown, config).await
}

/// Serves SRT publishers on an already bound UDP socket (handy with port 0 in tests). Returns
/// after `shutdown` is cancelled and every connection task has ended.
///
/// If the `srt-tokio` listener task dies (it should not, but it parses untrusted datagrams), it
/// is restarted on the same socket; publishers already connected keep going.
pub async fn serve_srt_socket(
    socket: UdpSocket,
    handler: Arc<dyn PublishHandler>,
    shutdown: CancellationToken,
    config: IngestConfig,
) -> Result<()> {
    let bind_err = |addr, source| Error::Bind {
        protocol: "srt",
        addr,
        source,
    };
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let local = socket.local_addr().map_err(|e| bind_err(unspecified, e))?;
    let std_socket = socket.into_std().map_err(|e| bind_err(local, e))?;
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    info!(%local, "SRT ingest listening");

    loop {
        let socket = std_socket
            .try_clone()
            .and_then(UdpSocket::from_std)
            .map_err(|e| bind_err(local, e))?;
        let latency = config.srt_latency;
        let (mut listener, mut incoming) = SrtListener::builder()
            .socket(socket)
            .latency(latency)
            .bind(local)
            .await
            .map_err(|e| bind_err(local, e))?;

        let listener_died = loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => break false,
                r = incoming.incoming().next() => r,
            };
            let Some(request) = request else {
                break true;
            };
            let peer = request.remote();
            let span = info_span!("ingest", protocol = "srt", %peer, key = tracing::field::Empty);
            let handler = handler.clone();
            let config = config.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(
                async move {
                    let outcome = catch_panic(
                        Protocol::Srt,
                        handle_request(request, handler, config, shutdown),
                    )
                    .await;
                    count_connection(Protocol::Srt, outcome);
                }
                .instrument(span),
            );
        };

        if !listener_died {
            // `close` waits for the listener task; it has no reason to hang, but never let
            // shutdown depend on that.
            let _ = tokio::time::timeout(Duration::from_secs(2), listener.close()).await;
            break;
        }
        error!(%local, "SRT listener task ended unexpectedly; restarting it");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }

    tracker.close();
    tracker.wait().await;
    info!("SRT ingest stopped");
    Ok(())
}

async fn handle_request(
    request: ConnectionRequest,
    handler: Arc<dyn PublishHandler>,
    config: Arc<IngestConfig>,
    shutdown: CancellationToken,
) -> Outcome {
    let peer = request.remote();
    let sid = request.stream_id().map(|s| s.to_string());
    let key = match parse_stream_id(sid.as_deref().unwrap_or("")) {
        Ok(k) => k,
        Err(e) => {
            info!(streamid = ?sid, reason = %e, "SRT caller refused: bad streamid");
            reject(request, ServerRejectReason::BadRequest).await;
            return Outcome::Refused;
        }
    };
    tracing::Span::current().record("key", key.as_str());

    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let req = PublishRequest {
        key,
        protocol: Protocol::Srt,
        peer,
    };
    let media = MediaStream {
        container: Container::MpegTs,
        rx,
    };
    let decision = tokio::select! {
        _ = shutdown.cancelled() => Err(crate::Refusal("server shutting down".into())),
        d = ask_handler(&handler, req, media, config.handshake_timeout) => d,
    };
    if let Err(refusal) = decision {
        info!(reason = %refusal, "SRT publish refused");
        reject(request, ServerRejectReason::Forbidden).await;
        return Outcome::Refused;
    }

    let socket = match tokio::time::timeout(config.handshake_timeout, request.accept(None)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(error = %e, "SRT accept failed");
            return Outcome::Error;
        }
        Err(_) => {
            warn!("SRT accept timed out");
            return Outcome::Error;
        }
    };
    info!("SRT publish accepted");
    match pump(socket, &tx, &config, &shutdown).await {
        Ok(bytes) => info!(bytes, "SRT publisher disconnected"),
        Err(Error::Shutdown) => info!("SRT connection closed by shutdown"),
        Err(e) => info!(error = %e, "SRT publisher ended"),
    }
    Outcome::Accepted
}

async fn reject(request: ConnectionRequest, reason: ServerRejectReason) {
    if let Err(e) = request.reject(RejectReason::Server(reason)).await {
        debug!(error = %e, "SRT reject could not be delivered");
    }
}

/// Moves payloads from the SRT socket to the media channel; returns the byte count.
async fn pump(
    mut socket: SrtSocket,
    tx: &mpsc::Sender<bytes::Bytes>,
    config: &IngestConfig,
    shutdown: &CancellationToken,
) -> Result<u64> {
    let mut total = 0u64;
    let result = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Err(Error::Shutdown),
            n = tokio::time::timeout(config.idle_timeout, socket.next()) => n,
        };
        let payload = match next {
            Err(_) => {
                break Err(Error::Idle {
                    after: config.idle_timeout,
                })
            }
            Ok(None) => break Ok(total),
            Ok(Some(Err(e))) => break Err(Error::Io(e)),
            Ok(Some(Ok((_, payload)))) => payload,
        };
        total += payload.len() as u64;
        count_media(Protocol::Srt, payload.len(), 1);
        if let Err(e) = send_media(tx, payload, config.stall_timeout, shutdown).await {
            break Err(e);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close()).await;
    result
}
