//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while talking to the server or uploading a file.
///
/// Messages are meant to be shown to a person as they are: each names the step that failed
/// (`create upload`, `upload of part 3`, ...), the HTTP status and the server's own
/// `{"error": "..."}` text where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `--server` value is not an http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidServerUrl { url: String, reason: String },

    /// The server handed back a URL (part URL, playlist URL) that cannot be resolved.
    #[error("the server returned an invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The HTTP client could not be set up (TLS backend initialisation).
    #[error("could not initialise the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),

    /// The request never got an HTTP answer: DNS, connection refused, TLS, timeout, reset.
    #[error("{op}: could not reach {url}: {detail}")]
    Network {
        op: String,
        /// The URL without its query string (part URLs carry signatures).
        url: String,
        detail: String,
    },

    /// An `/api/v1` call answered with a 4xx/5xx status.
    #[error("{op}: server answered HTTP {status}: {message}{hint}", hint = status_hint(*status))]
    Api {
        op: String,
        status: u16,
        /// The server's `{"error": ...}` text, or the start of the body if it was not JSON.
        message: String,
    },

    /// A part `PUT` answered with a 4xx/5xx status (after any retries).
    #[error("upload of part {part_number} failed: HTTP {status}: {message}")]
    Part {
        part_number: u32,
        status: u16,
        message: String,
    },

    /// A part `PUT` succeeded but carried no `ETag` header, so the upload cannot be completed.
    #[error("upload of part {part_number}: the server accepted it but sent no ETag header")]
    MissingEtag { part_number: u32 },

    /// A 2xx response whose body is not what the API documents.
    #[error("{op}: unexpected response from the server: {source}")]
    Decode {
        op: String,
        #[source]
        source: serde_json::Error,
    },

    /// The server's answers contradict each other or the protocol (e.g. a part number out of
    /// range, a 403 on a part with no fresh URL offered).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// Reading the file to upload, or the resume state, failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The upload went through but the server could not transcode the video.
    #[error("video {video_id} failed to process: {reason}")]
    ProcessingFailed { video_id: String, reason: String },
}

/// `std::result::Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status the server answered with, if the error came from an HTTP response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Part { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether trying the same request again later may succeed (network trouble, 5xx, 408, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Network { .. } => true,
            _ => matches!(self.status(), Some(s) if s >= 500 || s == 408 || s == 429),
        }
    }
}

/// A short hint appended to API errors whose fix is usually on the user's side.
fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (missing or wrong API token?)",
        403 => " (the API token is not allowed to do this)",
        413 => " (the file is larger than the server accepts)",
        _ => "",
    }
}

/// The full cause chain of a reqwest error, without the URL (which may carry a signature).
pub(crate) fn describe_reqwest(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut out = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_error_names_step_status_and_server_text() {
        let e = Error::Api {
            op: "complete upload abc".into(),
            status: 400,
            message: "part 3: etag mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "complete upload abc: server answered HTTP 400: part 3: etag mismatch"
        );
        let e = Error::Api {
            op: "create upload".into(),
            status: 401,
            message: "unauthorized".into(),
        };
        assert!(e.to_string().ends_with("(missing or wrong API token?)"));
    }

    #[test]
    fn transient_classification() {
        let part = |status| Error::Part {
            part_number: 1,
            status,
            message: String::new(),
        };
        assert!(part(500).is_transient());
        assert!(part(503).is_transient());
        assert!(part(429).is_transient());
        assert!(!part(403).is_transient());
        assert!(!part(400).is_transient());
        assert!(Error::Network {
            op: "x".into(),
            url: "y".into(),
            detail: "z".into()
        }
        .is_transient());
    }
}
