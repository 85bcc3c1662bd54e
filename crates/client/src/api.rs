//! Typed wrapper over the server's HTTP API: one method per endpoint, bodies as serde types.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::{stream, Stream};
use reqwest::header::{CONTENT_LENGTH, ETAG};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{describe_reqwest, Error, Result};

/// Size of the chunks a part body is streamed in; byte progress is reported per chunk.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;

/// Body of `POST /api/v1/uploads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateUploadRequest {
    pub filename: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// A part that still has to be sent, with the (signed) URL to `PUT` it to.
///
/// The URL is either relative to the server (`/upload/{id}/{n}?expires=..&sig=..`) or absolute
/// (an S3 presigned URL); [`Client::put_part`] accepts both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartUrl {
    pub part_number: u32,
    pub url: String,
}

/// `201` answer to `POST /api/v1/uploads`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedUpload {
    pub upload_id: String,
    pub video_id: String,
    pub part_size: u64,
    pub parts: Vec<PartUrl>,
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A part the server already stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPart {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
}

/// Whether an upload still accepts parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Open,
    Completed,
    /// A state this client does not know (e.g. a newer server's `aborted`).
    #[serde(other)]
    Unknown,
}

/// Answer to `GET /api/v1/uploads/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    pub upload_id: String,
    pub video_id: String,
    pub size: u64,
    pub part_size: u64,
    pub state: UploadState,
    /// Parts the server stores.
    #[serde(default)]
    pub parts: Vec<StoredPart>,
    /// Parts not stored yet, each with a freshly signed URL.
    #[serde(default)]
    pub missing: Vec<PartUrl>,
}

/// One entry of the `complete` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletePart {
    pub part_number: u32,
    pub etag: String,
}

/// Body of `POST /api/v1/uploads/{id}/complete`: every part, in part-number order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompleteRequest {
    pub parts: Vec<CompletePart>,
}

/// Processing state of a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoStatus {
    Uploading,
    Queued,
    Processing,
    Ready,
    Failed,
    /// A status this client does not know; treated as "still working".
    #[serde(other)]
    Unknown,
}

impl VideoStatus {
    /// The wire name (`"queued"`, `"ready"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VideoStatus::Uploading => "uploading",
            VideoStatus::Queued => "queued",
            VideoStatus::Processing => "processing",
            VideoStatus::Ready => "ready",
            VideoStatus::Failed => "failed",
            VideoStatus::Unknown => "unknown",
        }
    }

    /// `ready` or `failed`: nothing more will happen to the video.
    pub fn is_final(self) -> bool {
        matches!(self, VideoStatus::Ready | VideoStatus::Failed)
    }
}

/// One rung of the adaptive ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rendition {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub bandwidth: u64,
    #[serde(default)]
    pub codecs: String,
}

/// The video object (`GET /api/v1/videos/{id}`, and the `202` answer to `complete`).
///
/// `hls_url`, `dash_url` and `poster_url` are usually relative to the server; turn them into
/// absolute URLs with [`Client::resolve`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoInfo {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub status: VideoStatus,
    /// Processing progress, 0.0 to 1.0.
    #[serde(default)]
    pub progress: f64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_s: Option<f64>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    #[serde(default)]
    pub renditions: Vec<Rendition>,
    #[serde(default)]
    pub hls_url: String,
    #[serde(default)]
    pub dash_url: String,
    #[serde(default)]
    pub poster_url: String,
}

/// Parses a `--server` value. A value without a scheme (`localhost:8080`) is taken as `http://`.
/// The result always ends in `/`, so API paths join below any path prefix.
fn parse_server_url(server: &str) -> Result<Url> {
    let bad = |reason: &str| Error::InvalidServerUrl {
        url: server.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = server.trim();
    if trimmed.is_empty() {
        return Err(bad("it is empty"));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let mut url = Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// servers are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must not have a query string or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Resolves a URL the server returned against the server URL: a relative one
/// (`/upload/..`, `/v/{id}/master.m3u8`) becomes absolute, an absolute http(s) one (an S3
/// presigned URL) is kept as it is.
pub fn resolve_url(server: &Url, url: &str) -> Result<Url> {
    let resolved = server.join(url).map_err(|e| Error::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(resolved.scheme(), "http" | "https") {
        return Err(Error::InvalidUrl {
            url: url.to_owned(),
            reason: "not an http(s) URL".to_owned(),
        });
    }
    Ok(resolved)
}

/// A URL with its query string and fragment removed, for messages (part URLs carry signatures).
fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The `{"error": "..."}` text of an error response, or the start of the body, or the status'
/// reason phrase.
async fn error_message(resp: Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(Deserialize)]
    struct ErrorBody {
        error: String,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(&body) {
        return e.error;
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        text.chars().take(300).collect()
    }
}

/// Client for one oxcast server.
///
/// Cheap to share by reference across concurrent part uploads; the underlying connection pool is
/// reused.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    server: Url,
    token: Option<String>,
    limiter: Option<std::sync::Arc<RateLimiter>>,
}

/// Caps the bytes/s of all part uploads of one client together (`oxcast upload --limit-rate`),
/// so an upload can share a thin link politely.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_s: f64,
    start: tokio::time::Instant,
    sent: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    pub fn new(bytes_per_s: u64) -> Self {
        RateLimiter {
            bytes_per_s: bytes_per_s.max(1) as f64,
            start: tokio::time::Instant::now(),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits until `n` more bytes fit in the budget.
    pub async fn acquire(&self, n: u64) {
        let total = self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        let due = self.start + Duration::from_secs_f64(total as f64 / self.bytes_per_s);
        tokio::time::sleep_until(due).await;
    }
}

impl Client {
    /// A client for `server` (e.g. `http://localhost:8080`), sending `Authorization: Bearer
    /// <token>` on `/api/v1` calls when a non-empty token is given.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let server = parse_server_url(server)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("oxcast-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Client {
            http,
            server,
            token: token.filter(|t| !t.is_empty()),
            limiter: None,
        })
    }

    /// Limits part uploads to `bytes_per_s` in total.
    pub fn with_rate_limit(mut self, bytes_per_s: u64) -> Self {
        self.limiter = Some(std::sync::Arc::new(RateLimiter::new(bytes_per_s)));
        self
    }

    /// The server URL (normalised, ending in `/`).
    pub fn server(&self) -> &Url {
        &self.server
    }

    /// Resolves a URL returned by the server (see [`resolve_url`]).
    pub fn resolve(&self, url: &str) -> Result<Url> {
        resolve_url(&self.server, url)
    }

    /// `{server}/api/v1/<segments..>`, each segment percent-encoded.
    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.server.clone();
        // An http(s) URL with a host always has path segments.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url
    }

    fn api_request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends an `/api/v1` request and decodes a 2xx JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        op: String,
        url: Url,
        req: RequestBuilder,
    ) -> Result<T> {
        let network = |e| Error::Network {
            op: op.clone(),
            url: redacted(&url),
            detail: describe_reqwest(e),
        };
        let resp = req.send().await.map_err(network)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Api {
                op,
                status: status.as_u16(),
                message: error_message(resp).await,
            });
        }
        let body = resp.bytes().await.map_err(network)?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode { op, source })
    }

    /// `POST /api/v1/uploads`: opens an upload and returns the part URLs.
    pub async fn create_upload(&self, req: &CreateUploadRequest) -> Result<CreatedUpload> {
        let url = self.api_url(&["uploads"]);
        let http = self.api_request(Method::POST, url.clone()).json(req);
        self.call(format!("create upload for {}", req.filename), url, http)
            .await
    }

    /// `GET /api/v1/uploads/{id}`: stored parts, and fresh URLs for the missing ones.
    pub async fn upload_status(&self, upload_id: &str) -> Result<UploadStatus> {
        let url = self.api_url(&["uploads", upload_id]);
        let http = self.api_request(Method::GET, url.clone());
        self.call(format!("get upload {upload_id}"), url, http)
            .await
    }

    /// `POST /api/v1/uploads/{id}/complete` with every part's ETag, in part-number order.
    pub async fn complete(&self, upload_id: &str, parts: &[CompletePart]) -> Result<VideoInfo> {
        let url = self.api_url(&["uploads", upload_id, "complete"]);
        let body = CompleteRequest {
            parts: parts.to_vec(),
        };
        let http = self.api_request(Method::POST, url.clone()).json(&body);
        self.call(format!("complete upload {upload_id}"), url, http)
            .await
    }

    /// `GET /api/v1/videos/{id}`.
    pub async fn video(&self, video_id: &str) -> Result<VideoInfo> {
        let url = self.api_url(&["videos", video_id]);
        let http = self.api_request(Method::GET, url.clone());
        self.call(format!("get video {video_id}"), url, http).await
    }

    /// `PUT`s one part's bytes to its (relative or absolute) signed URL and returns the `ETag`
    /// the server answered with. No `Authorization` header is sent: the URL is the credential.
    ///
    /// The body is streamed in 64 KiB chunks with an explicit `Content-Length` (S3 refuses
    /// chunked transfer encoding); `on_chunk(n)` is called as each chunk of `n` bytes is handed
    /// to the connection, so callers can show progress within a part. It is not retried here: a
    /// failure is returned as [`Error::Network`] or [`Error::Part`].
    pub async fn put_part(
        &self,
        part_number: u32,
        url: &str,
        data: Bytes,
        on_chunk: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<String> {
        let url = self.resolve(url)?;
        let len = data.len() as u64;
        let body = match &self.limiter {
            None => reqwest::Body::wrap_stream(chunked(data, CHUNK_SIZE, on_chunk)),
            Some(limiter) => {
                use futures::StreamExt;
                let limiter = limiter.clone();
                let paced = chunked(data, CHUNK_SIZE, on_chunk).then(move |chunk| {
                    let limiter = limiter.clone();
                    async move {
                        if let Ok(c) = &chunk {
                            limiter.acquire(c.len() as u64).await;
                        }
                        chunk
                    }
                });
                reqwest::Body::wrap_stream(paced)
            }
        };
        let resp = self
            .http
            .put(url.clone())
            .header(CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::Network {
                op: format!("upload of part {part_number}"),
                url: redacted(&url),
                detail: describe_reqwest(e),
            })?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Part {
                part_number,
                status: status.as_u16(),
                message: error_message(resp).await,
            });
        }
        resp.headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or(Error::MissingEtag { part_number })
    }
}

/// `data` as a stream of `chunk`-sized slices (zero-copy), calling `on_chunk` as each is pulled.
pub(crate) fn chunked(
    data: Bytes,
    chunk: usize,
    on_chunk: impl Fn(u64) + Send + Sync + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let len = data.len();
    let chunk = chunk.max(1);
    stream::iter((0..len).step_by(chunk).map(move |start| {
        let end = (start + chunk).min(len);
        on_chunk((end - start) as u64);
        Ok(data.slice(start..end))
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;

    use super::*;

    #[test]
    fn server_url_is_normalised() {
        let u = |s| parse_server_url(s).unwrap().to_string();
        assert_eq!(u("http://localhost:8080"), "http://localhost:8080/");
        assert_eq!(u("https://v.example.com/"), "https://v.example.com/");
        assert_eq!(u("localhost:8080"), "http://localhost:8080/");
        assert_eq!(u(" http://h/oxcast "), "http://h/oxcast/");
        for bad in ["", "ftp://h/", "http://", "http://h/?a=b"] {
            assert!(
                matches!(parse_server_url(bad), Err(Error::InvalidServerUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn api_urls_keep_the_path_prefix_and_encode_ids() {
        let c = Client::new("http://h:1/oxcast", None).unwrap();
        assert_eq!(
            c.api_url(&["uploads"]).as_str(),
            "http://h:1/oxcast/api/v1/uploads"
        );
        assert_eq!(
            c.api_url(&["uploads", "ab/../c", "complete"]).as_str(),
            "http://h:1/oxcast/api/v1/uploads/ab%2F..%2Fc/complete"
        );
        let c = Client::new("http://h:1", None).unwrap();
        assert_eq!(
            c.api_url(&["videos", "v1"]).as_str(),
            "http://h:1/api/v1/videos/v1"
        );
    }

    #[test]
    fn relative_and_absolute_urls_resolve() {
        let server = parse_server_url("http://127.0.0.1:8080").unwrap();
        let r = |s| resolve_url(&server, s).unwrap().to_string();
        assert_eq!(
            r("/upload/abc/3?expires=17&sig=d2f"),
            "http://127.0.0.1:8080/upload/abc/3?expires=17&sig=d2f"
        );
        assert_eq!(
            r("/v/xyz/master.m3u8"),
            "http://127.0.0.1:8080/v/xyz/master.m3u8"
        );
        // An S3 presigned URL goes to S3, not to the server.
        let s3 = "https://bucket.s3.eu-west-1.amazonaws.com/up/abc/3?X-Amz-Signature=ff&X-Amz-Expires=900";
        assert_eq!(r(s3), s3);
        assert_eq!(r("http://other:9000/p?x=1"), "http://other:9000/p?x=1");
        // Behind a path prefix, a root-relative URL goes to the host root (RFC 3986).
        let prefixed = parse_server_url("http://h/oxcast").unwrap();
        assert_eq!(
            resolve_url(&prefixed, "/upload/a/1").unwrap().as_str(),
            "http://h/upload/a/1"
        );
        assert_eq!(
            resolve_url(&prefixed, "upload/a/1").unwrap().as_str(),
            "http://h/oxcast/upload/a/1"
        );
        assert!(matches!(
            resolve_url(&server, "file:///etc/passwd"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn redaction_drops_signatures() {
        let u = Url::parse("https://b.s3.amazonaws.com/k?X-Amz-Signature=secret").unwrap();
        assert_eq!(redacted(&u), "https://b.s3.amazonaws.com/k");
    }

    #[tokio::test]
    async fn part_body_streams_in_64k_chunks_and_reports_each() {
        let data: Vec<u8> = (0..150 * 1024).map(|i| (i % 251) as u8).collect();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let chunks: Vec<Bytes> = chunked(Bytes::from(data.clone()), CHUNK_SIZE, move |n| {
            seen2.lock().unwrap().push(n)
        })
        .map(|c| c.unwrap())
        .collect()
        .await;
        assert_eq!(*seen.lock().unwrap(), vec![65536, 65536, 22528]);
        assert_eq!(chunks.concat(), data);
        let empty: Vec<_> = chunked(Bytes::new(), CHUNK_SIZE, |_| panic!("no chunk"))
            .collect()
            .await;
        assert!(empty.is_empty());
    }

    #[test]
    fn wire_formats() {
        let s: UploadStatus = serde_json::from_str(
            r#"{"upload_id":"u","video_id":"v","size":10,"part_size":4,"state":"open",
                "parts":[{"part_number":1,"size":4,"etag":"\"e1\""}],
                "missing":[{"part_number":2,"url":"/upload/u/2?sig=x"}]}"#,
        )
        .unwrap();
        assert_eq!(s.state, UploadState::Open);
        assert_eq!(s.parts[0].etag, "\"e1\"");
        let s: UploadStatus = serde_json::from_str(
            r#"{"upload_id":"u","video_id":"v","size":10,"part_size":4,"state":"aborted"}"#,
        )
        .unwrap();
        assert_eq!(s.state, UploadState::Unknown);
        let v: VideoInfo = serde_json::from_str(
            r#"{"id":"v","title":"t","status":"ready","progress":1.0,"duration_s":12.5,
                "width":1920,"height":1080,"renditions":[{"name":"1080p","width":1920,
                "height":1080,"bandwidth":5000000,"codecs":"avc1.640028"}],
                "hls_url":"/v/v/master.m3u8","dash_url":"/v/v/manifest.mpd",
                "poster_url":"/v/v/poster.jpg"}"#,
        )
        .unwrap();
        assert_eq!(v.status, VideoStatus::Ready);
        assert_eq!(v.renditions[0].bandwidth, 5_000_000);
        let req = CreateUploadRequest {
            filename: "a.mp4".into(),
            size: 3,
            title: None,
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"filename":"a.mp4","size":3}"#
        );
    }
}
