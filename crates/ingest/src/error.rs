use std::{net::SocketAddr, time::Duration};

/// Errors of the ingest servers.
///
/// Only [`Error::Bind`] escapes a `serve_*` function; the others end one connection and are
/// logged in its span.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listening socket could not be set up.
    #[error("cannot bind {protocol} listener on {addr}: {source}")]
    Bind {
        /// `"srt"` or `"rtmp"`.
        protocol: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading from or writing to the publisher failed.
    #[error("i/o error with the publisher: {0}")]
    Io(#[from] std::io::Error),
    /// The RTMP handshake bytes were invalid.
    #[error("RTMP handshake failed after {bytes_read} bytes: {detail}")]
    RtmpHandshake {
        /// Bytes read from the peer so far.
        bytes_read: u64,
        /// What the RTMP library said.
        detail: String,
    },
    /// An RTMP chunk or command could not be handled.
    #[error("RTMP session error after {bytes_read} bytes: {detail}")]
    RtmpSession {
        /// Bytes read from the peer so far.
        bytes_read: u64,
        /// What the RTMP library said.
        detail: String,
    },
    /// The peer did not get to a publish decision in time.
    #[error("no publish decision within {after:?} ({phase})")]
    HandshakeTimeout {
        /// The configured limit.
        after: Duration,
        /// Where the connection was stuck.
        phase: &'static str,
    },
    /// An accepted publisher sent nothing for too long.
    #[error("publisher sent nothing for {after:?}")]
    Idle {
        /// The configured limit.
        after: Duration,
    },
    /// The media consumer took nothing for too long.
    #[error("media consumer took nothing for {after:?}")]
    ConsumerStalled {
        /// The configured limit.
        after: Duration,
    },
    /// The media consumer dropped its receiver.
    #[error("media consumer dropped the stream")]
    ConsumerGone,
    /// The publisher closed the connection before publishing.
    #[error("publisher closed the connection before publishing")]
    ClosedBeforePublish,
    /// The shutdown token was cancelled.
    #[error("server shutting down")]
    Shutdown,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
