//! RTMP ingest: `rtmp://host:PORT/live/<stream_key>`, re-muxed to FLV.
//!
//! The handshake and the RTMP message layer (chunking, connect, createStream, publish) are
//! `rml_rtmp`'s; this module drives the socket, asks the [`PublishHandler`], and turns the
//! publisher's audio/video/metadata messages into FLV tags.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use rml_rtmp::{
    handshake::{Handshake, HandshakeProcessResult, PeerType},
    sessions::{ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::{
    ask_handler, catch_panic, count_connection, count_media, flv, key_fingerprint,
    noise::{Noise, NoiseLog},
    ratelog::{LogLimiter, Verdict},
    send_media, Container, Error, IngestConfig, MediaStream, Outcome, Protocol, PublishHandler,
    PublishRequest, Result,
};

/// The only RTMP application name accepted.
pub const RTMP_APP: &str = "live";

/// Serves RTMP publishers on `listener` until `shutdown` is cancelled, with default
/// [`IngestConfig`].
pub async fn serve_rtmp(
    listener: TcpListener,
    handler: Arc<dyn PublishHandler>,
    shutdown: CancellationToken,
) {
    serve_rtmp_with(listener, handler, shutdown, IngestConfig::default()).await
}

/// [`serve_rtmp`] with explicit tunables. Returns after `shutdown` is cancelled and every
/// connection task has ended.
pub async fn serve_rtmp_with(
    listener: TcpListener,
    handler: Arc<dyn PublishHandler>,
    shutdown: CancellationToken,
    config: IngestConfig,
) {
    let tracker = TaskTracker::new();
    let noise = Arc::new(NoiseLog::new(Protocol::Rtmp, &config));
    let mut flush = tokio::time::interval(noise.tick());
    // Failures to accept have no source; one line per interval, then a count.
    let mut accept_errors = LogLimiter::new(config.log_interval, 1);
    let config = Arc::new(config);
    info!(local = ?listener.local_addr().ok(), "RTMP ingest listening");
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = flush.tick() => {
                noise.flush();
                let now = Instant::now().into_std();
                for s in accept_errors.due(now) {
                    warn!(count = s.suppressed, "{} more RTMP accept failures in the last {:.0} s",
                        s.suppressed, s.over.as_secs_f64());
                }
                continue;
            }
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Usually out of file descriptors; back off instead of spinning.
                if accept_errors.hit((), Instant::now().into_std()) == Verdict::Log {
                    warn!(error = %e, "RTMP accept failed; more failures are counted, not logged");
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let span = info_span!("ingest", protocol = "rtmp", %peer, key = tracing::field::Empty);
        let conn = Connection {
            stream,
            peer,
            handler: handler.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
            noise: noise.clone(),
            bytes_read: 0,
            tx: None,
            refused: false,
        };
        tracker.spawn(
            async move {
                let outcome = catch_panic(Protocol::Rtmp, conn.run()).await;
                count_connection(Protocol::Rtmp, outcome);
            }
            .instrument(span),
        );
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
    noise.flush();
    info!("RTMP ingest stopped");
}

/// What to do after handling some RTMP results.
enum Flow {
    Continue,
    Close,
}

struct Connection {
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<dyn PublishHandler>,
    config: Arc<IngestConfig>,
    shutdown: CancellationToken,
    noise: Arc<NoiseLog>,
    bytes_read: u64,
    /// Set once the handler accepted the publish.
    tx: Option<mpsc::Sender<Bytes>>,
    refused: bool,
}

impl Connection {
    async fn run(mut self) -> Outcome {
        let _ = self.stream.set_nodelay(true);
        let shutdown = self.shutdown.clone();
        let result = tokio::select! {
            _ = shutdown.cancelled() => Err(Error::Shutdown),
            r = self.serve() => r,
        };
        let outcome = if self.tx.is_some() {
            Outcome::Accepted
        } else if self.refused {
            Outcome::Refused
        } else {
            Outcome::Error
        };
        match (&result, outcome) {
            (Ok(()), Outcome::Accepted) => info!(bytes = self.bytes_read, "RTMP connection closed"),
            (Err(Error::Shutdown), Outcome::Accepted) => {
                info!("RTMP connection closed by shutdown")
            }
            (Err(e), Outcome::Accepted) => info!(error = %e, "RTMP publisher ended"),
            // The refusal itself went through `noise`.
            (Ok(()), _) => debug!("RTMP connection closed after a refusal"),
            (
                Err(
                    e @ (Error::RtmpHandshake { .. }
                    | Error::RtmpSession { .. }
                    | Error::HandshakeTimeout { .. }),
                ),
                _,
            ) => self
                .noise
                .note(Some(self.peer.ip()), Noise::Malformed, 1, e),
            // Closed or reset before publishing: health checks, port scans, a publisher that
            // gave up after a refusal.
            (Err(e), _) => debug!(error = %e, "RTMP connection dropped before publishing"),
        }
        // Dropping `self` closes the socket and ends the media stream.
        outcome
    }

    async fn serve(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.config.handshake_timeout;
        let remaining = self.handshake(deadline).await?;
        let (mut session, initial) =
            ServerSession::new(ServerSessionConfig::new()).map_err(|e| self.session_err(e))?;
        if let Flow::Close = self.handle_results(&mut session, initial).await? {
            return Ok(());
        }
        let mut input = remaining;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if !input.is_empty() {
                let results = session
                    .handle_input(&input)
                    .map_err(|e| self.session_err(e))?;
                if let Flow::Close = self.handle_results(&mut session, results).await? {
                    return Ok(());
                }
            }
            let n = self.read(&mut buf, deadline).await?;
            if n == 0 {
                return if self.tx.is_some() || self.refused {
                    Ok(())
                } else {
                    Err(Error::ClosedBeforePublish)
                };
            }
            if self.tx.is_some() {
                count_media(Protocol::Rtmp, n, 0);
            }
            input.clear();
            input.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads some bytes; before the publish is accepted the read is bounded by the handshake
    /// `deadline`, afterwards by the idle timeout.
    async fn read(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize> {
        let n = if self.tx.is_some() {
            let idle = self.config.idle_timeout;
            tokio::time::timeout(idle, self.stream.read(buf))
                .await
                .map_err(|_| Error::Idle { after: idle })??
        } else {
            tokio::time::timeout_at(deadline, self.stream.read(buf))
                .await
                .map_err(|_| Error::HandshakeTimeout {
                    after: self.config.handshake_timeout,
                    phase: if self.bytes_read < 3073 {
                        "handshake"
                    } else {
                        "waiting for publish"
                    },
                })??
        };
        self.bytes_read += n as u64;
        Ok(n)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let limit = self.config.idle_timeout;
        tokio::time::timeout(limit, self.stream.write_all(bytes))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "publisher does not read",
                ))
            })??;
        Ok(())
    }

    /// Runs the RTMP handshake; returns the bytes read past its end.
    async fn handshake(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        let mut hs = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.read(&mut buf, deadline).await?;
            if n == 0 {
                return Err(Error::ClosedBeforePublish);
            }
            match hs.process_bytes(&buf[..n]) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    if !response_bytes.is_empty() {
                        self.write(&response_bytes).await?;
                    }
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    if !response_bytes.is_empty() {
                        self.write(&response_bytes).await?;
                    }
                    debug!("RTMP handshake complete");
                    return Ok(remaining_bytes);
                }
                Err(e) => {
                    return Err(Error::RtmpHandshake {
                        bytes_read: self.bytes_read,
                        detail: e.to_string(),
                    })
                }
            }
        }
    }

    fn session_err(&self, e: impl std::fmt::Display) -> Error {
        Error::RtmpSession {
            bytes_read: self.bytes_read,
            detail: e.to_string(),
        }
    }

    async fn handle_results(
        &mut self,
        session: &mut ServerSession,
        results: Vec<ServerSessionResult>,
    ) -> Result<Flow> {
        for r in results {
            match r {
                ServerSessionResult::OutboundResponse(p) => self.write(&p.bytes).await?,
                ServerSessionResult::RaisedEvent(e) => {
                    if let Flow::Close = self.handle_event(session, e).await? {
                        return Ok(Flow::Close);
                    }
                }
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(Flow::Continue)
    }

    /// Writes the outbound packets of an accept/reject answer.
    async fn write_answer(
        &mut self,
        answer: std::result::Result<
            Vec<ServerSessionResult>,
            rml_rtmp::sessions::ServerSessionError,
        >,
    ) -> Result<()> {
        for r in answer.map_err(|e| self.session_err(e))? {
            if let ServerSessionResult::OutboundResponse(p) = r {
                self.write(&p.bytes).await?;
            }
        }
        Ok(())
    }

    async fn handle_event(
        &mut self,
        session: &mut ServerSession,
        event: ServerSessionEvent,
    ) -> Result<Flow> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.trim_end_matches('/') == RTMP_APP {
                    let answer = session.accept_request(request_id);
                    self.write_answer(answer).await?;
                } else {
                    // The application is not logged: `rtmp://host/KEY` puts a key there.
                    self.noise.note(
                        Some(self.peer.ip()),
                        Noise::Refused,
                        1,
                        &format_args!(
                            "connect to unknown application #{} (only {RTMP_APP:?} is served)",
                            key_fingerprint(&app_name)
                        ),
                    );
                    let answer = session.reject_request(
                        request_id,
                        "NetConnection.Connect.Rejected",
                        "unknown application",
                    );
                    self.write_answer(answer).await?;
                    self.refused = true;
                    return self.close_after_refusal().await;
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                stream_key,
                ..
            } => {
                if self.tx.is_some() {
                    let answer = session.reject_request(
                        request_id,
                        "NetStream.Publish.BadName",
                        "already publishing on this connection",
                    );
                    self.write_answer(answer).await?;
                    return Ok(Flow::Continue);
                }
                let fingerprint = key_fingerprint(&stream_key);
                tracing::Span::current().record("key", fingerprint.as_str());
                let (tx, rx) = mpsc::channel(self.config.channel_capacity);
                let req = PublishRequest {
                    key: stream_key,
                    protocol: Protocol::Rtmp,
                    peer: self.peer,
                    takeover: None,
                };
                let media = MediaStream {
                    container: Container::Flv,
                    rx,
                };
                match ask_handler(&self.handler, req, media, self.config.handshake_timeout).await {
                    Ok(()) => {
                        let answer = session.accept_request(request_id);
                        self.write_answer(answer).await?;
                        info!("RTMP publish accepted");
                        self.send(&tx, flv::header()).await?;
                        self.tx = Some(tx);
                    }
                    Err(refusal) => {
                        self.noise.note(
                            Some(self.peer.ip()),
                            Noise::Refused,
                            1,
                            &format_args!("publish with key #{fingerprint} refused: {refusal}"),
                        );
                        let answer = session.reject_request(
                            request_id,
                            "NetStream.Publish.BadName",
                            &refusal.0,
                        );
                        self.write_answer(answer).await?;
                        self.refused = true;
                        return self.close_after_refusal().await;
                    }
                }
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                self.noise.note(
                    Some(self.peer.ip()),
                    Noise::Refused,
                    1,
                    &"play request (this server only accepts publishers)",
                );
                let answer = session.reject_request(
                    request_id,
                    "NetStream.Play.Failed",
                    "this server only accepts publishers",
                );
                self.write_answer(answer).await?;
                self.refused = true;
                return self.close_after_refusal().await;
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                let body = flv::on_metadata_body(&flv::metadata_entries(&metadata));
                self.media(flv::TAG_SCRIPT, 0, &body).await?;
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.media(flv::TAG_AUDIO, timestamp.value, &data).await?,
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.media(flv::TAG_VIDEO, timestamp.value, &data).await?,
            ServerSessionEvent::PublishStreamFinished { .. } => {
                info!("RTMP publisher finished");
                return Ok(Flow::Close);
            }
            // By name only: most events carry the stream key (releaseStream, FCPublish, ...).
            other => debug!(event = event_name(&other), "RTMP event ignored"),
        }
        Ok(Flow::Continue)
    }

    async fn media(&mut self, tag_type: u8, timestamp: u32, body: &[u8]) -> Result<()> {
        let Some(tx) = self.tx.clone() else {
            return Ok(()); // not publishing: nothing may reach a stream
        };
        match flv::tag(tag_type, timestamp, body) {
            Some(tag) => {
                count_media(Protocol::Rtmp, 0, 1);
                self.send(&tx, tag).await
            }
            None => {
                warn!(
                    len = body.len(),
                    "RTMP message too large for an FLV tag; dropped"
                );
                Ok(())
            }
        }
    }

    async fn send(&self, tx: &mpsc::Sender<Bytes>, chunk: Bytes) -> Result<()> {
        send_media(tx, chunk, self.config.stall_timeout, &self.shutdown).await
    }

    /// Lets the refusal reach the publisher, then closes.
    async fn close_after_refusal(&mut self) -> Result<Flow> {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.stream.shutdown()).await;
        Ok(Flow::Close)
    }
}

/// An RTMP event's name, without its fields (which may hold the stream key).
fn event_name(e: &ServerSessionEvent) -> &'static str {
    match e {
        ServerSessionEvent::ClientChunkSizeChanged { .. } => "ClientChunkSizeChanged",
        ServerSessionEvent::ConnectionRequested { .. } => "ConnectionRequested",
        ServerSessionEvent::ReleaseStreamRequested { .. } => "ReleaseStreamRequested",
        ServerSessionEvent::PublishStreamRequested { .. } => "PublishStreamRequested",
        ServerSessionEvent::PublishStreamFinished { .. } => "PublishStreamFinished",
        ServerSessionEvent::StreamMetadataChanged { .. } => "StreamMetadataChanged",
        ServerSessionEvent::AudioDataReceived { .. } => "AudioDataReceived",
        ServerSessionEvent::VideoDataReceived { .. } => "VideoDataReceived",
        ServerSessionEvent::UnhandleableAmf0Command { .. } => "UnhandleableAmf0Command",
        ServerSessionEvent::PlayStreamRequested { .. } => "PlayStreamRequested",
        ServerSessionEvent::PlayStreamFinished { .. } => "PlayStreamFinished",
        ServerSessionEvent::AcknowledgementReceived { .. } => "AcknowledgementReceived",
        ServerSessionEvent::PingResponseReceived { .. } => "PingResponseReceived",
    }
}
