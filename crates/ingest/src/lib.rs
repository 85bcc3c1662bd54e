//! RTMP and SRT ingest servers for oxcast live streaming.
//!
//! An encoder (OBS, ffmpeg, a hardware box) pushes a live stream to one of two servers:
//!
//! * [`serve_rtmp`]: `rtmp://host:PORT/live/<stream_key>`. The publisher's audio, video and
//!   metadata messages are re-muxed into one FLV byte stream ([`Container::Flv`]) that
//!   `ffmpeg -f flv -i pipe:0` reads.
//! * [`serve_srt`]: an SRT listener. The caller's `streamid` carries the key (a bare key, the
//!   access-control syntax `#!::r=KEY,m=publish`, or `publish:KEY`); the MPEG-TS payload is
//!   passed through as-is ([`Container::MpegTs`]).
//!
//! Both servers ask a [`PublishHandler`] whether a stream key may publish *before* any media is
//! accepted. On `Ok` the handler owns a [`MediaStream`] whose receiver yields the container bytes
//! in order and ends when the publisher disconnects; on `Err` the publisher is refused at once.
//!
//! # Behaviour
//! * Each connection runs in its own task with a tracing span (`protocol`, `peer`, and `key`:
//!   the key's [`key_fingerprint`], never the key itself).
//! * Garbage and refusals are logged per source address at most twice per
//!   [`IngestConfig::log_interval`]: the first at once, then a summary with the count
//!   ([`ratelog`]). Single events stay at DEBUG.
//! * The handshake (up to and including the publish decision) is bounded by
//!   [`IngestConfig::handshake_timeout`]; a publisher that sends nothing for
//!   [`IngestConfig::idle_timeout`] is dropped.
//! * Media channels are bounded: a slow consumer back-pressures the publisher (TCP for RTMP, SRT's
//!   own buffers for SRT). A consumer that takes nothing for [`IngestConfig::stall_timeout`]
//!   gets the publisher disconnected, so one stuck consumer cannot hold the shared SRT socket.
//! * Garbage on either port only ends that connection; panics inside a connection task are
//!   caught and counted as errors.
//! * Everything stops when the shutdown token is cancelled; the `serve_*` functions return once
//!   their connection tasks have ended.
//!
//! # Metrics
//! * `oxcast_ingest_bytes_total{protocol}`: bytes received from accepted publishers.
//! * `oxcast_ingest_messages_total{protocol}`: media messages (RTMP audio/video/metadata
//!   messages, SRT payloads) received from accepted publishers.
//! * `oxcast_ingest_connections_total{protocol,outcome="accepted|refused|error"}`.
//!
//! The `srt-tokio` crate logs through the `log` facade; bridge it (e.g. `tracing-log`) in the
//! binary to see its messages.

mod error;
pub mod flv;
pub mod keyframes;
mod noise;
pub mod relay;
pub use oxcast_base::ratelog;
mod rtmp;
mod srt;
mod srt_thread;
pub mod streamid;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use error::{Error, Result};
pub use rtmp::{serve_rtmp, serve_rtmp_with};
pub use srt::{serve_srt, serve_srt_socket, serve_srt_with};

/// The ingest protocol a publisher used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// RTMP over TCP.
    Rtmp,
    /// SRT over UDP.
    Srt,
}

impl Protocol {
    /// Lower-case name, as used in metrics labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Srt => "srt",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container format of a [`MediaStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Container {
    /// FLV (from RTMP): file header, then one tag per chunk.
    Flv,
    /// MPEG transport stream (from SRT), passed through unchanged.
    MpegTs,
}

/// A publisher asking to publish on a stream key.
///
/// Its `Debug` shows the key's [`key_fingerprint`], never the key.
#[derive(Clone)]
pub struct PublishRequest {
    /// The stream key (RTMP: the publish name; SRT: parsed from the `streamid`).
    pub key: String,
    /// The protocol the publisher used.
    pub protocol: Protocol,
    /// The publisher's address.
    pub peer: SocketAddr,
    /// Relayed by an ingest node that lost this stream's previous encoder: take it over.
    pub takeover: Option<relay::Takeover>,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRequest")
            .field("key", &format_args!("#{}", key_fingerprint(&self.key)))
            .field("protocol", &self.protocol)
            .field("peer", &self.peer)
            .field("takeover", &self.takeover)
            .finish()
    }
}

/// What logs show instead of a stream key: the first 8 hex digits of its SHA-256. Enough to
/// tell keys apart in a log ("the same wrong key 500 times"), useless for publishing.
pub fn key_fingerprint(key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a publish was refused; the text is logged and, for RTMP, sent to the publisher.
#[derive(Debug, Clone)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// A publisher's media as one container byte stream, in order; `rx` ends when the publisher
/// disconnects.
///
/// For [`Container::Flv`] the first chunk is the FLV file header and every later chunk is
/// exactly one tag (with its trailing `PreviousTagSize`). For [`Container::MpegTs`] each chunk
/// is one SRT payload (usually 7 × 188-byte TS packets).
#[derive(Debug)]
pub struct MediaStream {
    /// The container format of the bytes.
    pub container: Container,
    /// The bytes, in order.
    pub rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
}

/// Decides whether a publisher may publish, and takes its media.
#[async_trait::async_trait]
pub trait PublishHandler: Send + Sync + 'static {
    /// Called once per publisher after it names its stream key and BEFORE any media is accepted.
    /// Ok: the ingest pumps the publisher's media into the stream until it disconnects.
    /// Err: the publisher is refused at once (RTMP: publish error status + close; SRT: handshake
    /// rejected).
    ///
    /// Return promptly: consume `media.rx` in a task of your own. Nothing is sent on the stream
    /// until this returns, and a call that outlasts [`IngestConfig::handshake_timeout`] counts
    /// as a refusal.
    async fn publish(&self, req: PublishRequest, media: MediaStream) -> Result<(), Refusal>;
}

/// Tunables shared by both servers. `Default` gives production values.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IngestConfig {
    /// Time from connect until the publisher has been accepted or refused (handshake, connect,
    /// publish request and the handler's decision). Default 10 s.
    pub handshake_timeout: Duration,
    /// An accepted publisher that sends nothing for this long is dropped. Default 30 s.
    pub idle_timeout: Duration,
    /// A consumer that takes no chunk for this long gets its publisher dropped. Default 10 s.
    pub stall_timeout: Duration,
    /// Capacity, in chunks, of each [`MediaStream`] channel. Default 256.
    pub channel_capacity: usize,
    /// SRT receive latency offered to callers (the larger of both sides wins). Default 120 ms,
    /// libsrt's default.
    pub srt_latency: Duration,
    /// Garbage and refused publishes are logged at most twice per source per interval (the
    /// first at once, then a summary with the count). Default 10 s.
    pub log_interval: Duration,
    /// Sources tracked one by one for [`IngestConfig::log_interval`]; more share one entry.
    /// Default 64.
    pub log_max_sources: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(10),
            channel_capacity: 256,
            srt_latency: Duration::from_millis(120),
            log_interval: Duration::from_secs(10),
            log_max_sources: 64,
        }
    }
}

impl IngestConfig {
    /// Sets [`IngestConfig::handshake_timeout`].
    pub fn with_handshake_timeout(mut self, d: Duration) -> Self {
        self.handshake_timeout = d;
        self
    }
    /// Sets [`IngestConfig::idle_timeout`].
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }
    /// Sets [`IngestConfig::stall_timeout`].
    pub fn with_stall_timeout(mut self, d: Duration) -> Self {
        self.stall_timeout = d;
        self
    }
    /// Sets [`IngestConfig::channel_capacity`] (at least 1).
    pub fn with_channel_capacity(mut self, n: usize) -> Self {
        self.channel_capacity = n.max(1);
        self
    }
    /// Sets [`IngestConfig::srt_latency`].
    pub fn with_srt_latency(mut self, d: Duration) -> Self {
        self.srt_latency = d;
        self
    }
    /// Sets [`IngestConfig::log_interval`].
    pub fn with_log_interval(mut self, d: Duration) -> Self {
        self.log_interval = d;
        self
    }
}

/// How a connection ended, for the `outcome` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Accepted,
    Refused,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Error => "error",
        }
    }
}

fn count_connection(protocol: Protocol, outcome: Outcome) {
    metrics::counter!(
        "oxcast_ingest_connections_total",
        "protocol" => protocol.as_str(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

pub(crate) fn count_media(protocol: Protocol, bytes: usize, messages: u64) {
    metrics::counter!("oxcast_ingest_bytes_total", "protocol" => protocol.as_str())
        .increment(bytes as u64);
    metrics::counter!("oxcast_ingest_messages_total", "protocol" => protocol.as_str())
        .increment(messages);
}

/// Asks the handler, bounded by `timeout`; a handler that does not answer in time refuses.
pub(crate) async fn ask_handler(
    handler: &Arc<dyn PublishHandler>,
    req: PublishRequest,
    media: MediaStream,
    timeout: Duration,
) -> std::result::Result<(), Refusal> {
    match tokio::time::timeout(timeout, handler.publish(req, media)).await {
        Ok(r) => r,
        Err(_) => Err(Refusal("publish handler did not answer in time".into())),
    }
}

/// Sends one chunk with back-pressure, giving up after `stall` or on shutdown.
pub(crate) async fn send_media(
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    chunk: bytes::Bytes,
    stall: Duration,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(Error::Shutdown),
        r = tokio::time::timeout(stall, tx.send(chunk)) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::ConsumerGone),
            Err(_) => Err(Error::ConsumerStalled { after: stall }),
        },
    }
}

/// Runs a connection future, turning a panic into an error outcome.
async fn catch_panic<F>(protocol: Protocol, fut: F) -> Outcome
where
    F: std::future::Future<Output = Outcome>,
{
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            tracing::error!(%protocol, panic = %msg, "connection task panicked; dropped it");
            Outcome::Error
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_hide_the_key_and_tell_keys_apart() {
        let fp = key_fingerprint("s3cretKEYs3cretKEY");
        assert_eq!(fp.len(), 8);
        assert!(fp.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(fp, key_fingerprint("s3cretKEYs3cretKEY"), "stable");
        assert_ne!(fp, key_fingerprint("s3cretKEYs3cretKEz"));
        // SHA-256("abc") starts with ba7816bf.
        assert_eq!(key_fingerprint("abc"), "ba7816bf");
        let req = PublishRequest {
            key: "s3cretKEYs3cretKEY".into(),
            protocol: Protocol::Rtmp,
            peer: "127.0.0.1:1935".parse().unwrap(),
            takeover: None,
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains(&fp), "{shown}");
    }
}
