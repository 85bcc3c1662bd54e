//! SRT ingest: a listener whose callers name their stream key in the `streamid`; the MPEG-TS
//! payload is passed through unchanged.
//!
//! The SRT protocol is `srt-tokio`'s multiplexed listener: every caller shares one UDP socket
//! and one listener task, and each connection request is accepted or rejected by stream id
//! before the handshake completes. Because the listener task is shared, a connection whose
//! reader stops would eventually stall all SRT publishers; hence the stall timeout on the media
//! channel (see [`IngestConfig::stall_timeout`]).
//!
//! The listener runs on its own thread ([`crate::srt_thread`]) so that its per-datagram log
//! lines can be dropped; datagrams it cannot parse are reported from its statistics instead,
//! as one line per [`IngestConfig::log_interval`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use srt_tokio::{
    access::{RejectReason, ServerRejectReason},
    ConnectionRequest, SrtListener, SrtSocket,
};
use tokio::{net::UdpSocket, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, error, info, info_span, Instrument};

use crate::{
    ask_handler, catch_panic, count_connection, count_media, key_fingerprint,
    noise::{Noise, NoiseLog},
    send_media,
    srt_thread::SrtThread,
    streamid::parse_stream_id,
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
    let srt = SrtThread::start().map_err(|e| bind_err(local, e))?;
    let noise = Arc::new(NoiseLog::new(Protocol::Srt, &config));
    let mut flush = tokio::time::interval(noise.tick());
    let config = Arc::new(config);
    let tracker = TaskTracker::new();
    info!(%local, "SRT ingest listening");

    let result = loop {
        let socket = match std_socket.try_clone() {
            Ok(s) => s,
            Err(e) => break Err(bind_err(local, e)),
        };
        let latency = config.srt_latency;
        // Bound on the SRT thread, so that the listener task it spawns runs there.
        let bound = srt
            .run(async move {
                SrtListener::builder()
                    .socket(UdpSocket::from_std(socket)?)
                    .latency(latency)
                    .bind(local)
                    .await
            })
            .await;
        let (mut listener, mut incoming) = match bound {
            Ok(l) => l,
            Err(e) => break Err(bind_err(local, e)),
        };
        let mut stats = listener.statistics().clone();
        let mut parse_errors = 0;

        let listener_died = loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => break false,
                _ = flush.tick() => {
                    noise.flush();
                    continue;
                }
                Some(s) = stats.next() => {
                    let new = s.rx_parse_errors.saturating_sub(parse_errors);
                    parse_errors = s.rx_parse_errors;
                    if new > 0 {
                        noise.note(None, Noise::Malformed, new, &format_args!(
                            "{new} datagrams that are not SRT (srt-tokio does not report their \
                             sources)"
                        ));
                    }
                    continue;
                }
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
            let noise = noise.clone();
            tracker.spawn(
                async move {
                    let outcome = catch_panic(
                        Protocol::Srt,
                        handle_request(request, handler, config, shutdown, noise),
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
            break Ok(());
        }
        error!(%local, "SRT listener task ended unexpectedly; restarting it");
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    };

    // The connections' SRT sockets run on the SRT thread: stop it only after them.
    tracker.close();
    tracker.wait().await;
    srt.stop().await;
    noise.flush();
    info!("SRT ingest stopped");
    result
}

async fn handle_request(
    request: ConnectionRequest,
    handler: Arc<dyn PublishHandler>,
    config: Arc<IngestConfig>,
    shutdown: CancellationToken,
    noise: Arc<NoiseLog>,
) -> Outcome {
    let peer = request.remote();
    let sid = request.stream_id().map(|s| s.to_string());
    let key = match parse_stream_id(sid.as_deref().unwrap_or("")) {
        Ok(k) => k,
        Err(e) => {
            // The streamid itself is not logged: it usually holds a key.
            noise.note(
                Some(peer.ip()),
                Noise::Refused,
                1,
                &format_args!("caller with a bad streamid: {e}"),
            );
            reject(request, ServerRejectReason::BadRequest).await;
            return Outcome::Refused;
        }
    };
    let fingerprint = key_fingerprint(&key);
    tracing::Span::current().record("key", fingerprint.as_str());

    let (tx, rx) = mpsc::channel(config.channel_capacity);
    let req = PublishRequest {
        key,
        protocol: Protocol::Srt,
        peer,
        takeover: None,
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
        noise.note(
            Some(peer.ip()),
            Noise::Refused,
            1,
            &format_args!("publish with key #{fingerprint} refused: {refusal}"),
        );
        reject(request, ServerRejectReason::Forbidden).await;
        return Outcome::Refused;
    }

    let socket = match tokio::time::timeout(config.handshake_timeout, request.accept(None)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            noise.note(
                Some(peer.ip()),
                Noise::Malformed,
                1,
                &format_args!("accepted caller went away during the handshake: {e}"),
            );
            return Outcome::Error;
        }
        Err(_) => {
            noise.note(
                Some(peer.ip()),
                Noise::Malformed,
                1,
                &format_args!("accepted caller did not finish the handshake in time"),
            );
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
