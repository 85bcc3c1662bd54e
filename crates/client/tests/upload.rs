//! End-to-end tests of `upload_file` against an in-memory fake server.
//!
//! The fake below is a TEST DOUBLE of the real oxcast server's upload API, written from the API
//! description only: it keeps uploads and videos in a `Mutex`, signs part URLs with a trivial
//! token and advances a video one status per poll. It does not prove compatibility with the real
//! server; the real `oxcast` binary is tested against this client separately. What it does check
//! is this client's side of the protocol: the right bytes reach every part, resumption sends only
//! missing parts, expired URLs are refreshed, errors carry the server's text, part PUTs carry a
//! Content-Length and no Authorization header, and API calls carry the bearer token.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use oxcast_client::state::{self, FileIdentity, SavedUpload};
use oxcast_client::{upload_file, Client, Error, Progress, UploadOptions, VideoInfo, VideoStatus};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret";
const PART_SIZE: u64 = 1000;

#[derive(Default)]
struct Fake {
    base: String,
    next_id: u32,
    uploads: HashMap<String, FakeUpload>,
    videos: HashMap<String, FakeVideo>,
    /// Part numbers successfully stored, in arrival order.
    put_log: Vec<u32>,
    /// Part numbers refused with 403.
    forbidden_log: Vec<u32>,
    /// Parts whose URL in the `create` answer is already expired.
    expire_first_url: HashSet<u32>,
    /// Part number -> how many more PUTs of it answer 500.
    fail_500: HashMap<u32, u32>,
    /// When set, `complete` answers 400 with this error.
    complete_error: Option<String>,
    /// When set, processing ends in `failed` with this error.
    processing_error: Option<String>,
}

struct FakeUpload {
    video_id: String,
    size: u64,
    completed: bool,
    parts: BTreeMap<u32, (Vec<u8>, String)>,
}

struct FakeVideo {
    title: String,
    polls: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn err(status: StatusCode, msg: &str) -> Response {
    (status, Json(json!({ "error": msg }))).into_response()
}

fn part_count(size: u64) -> u32 {
    size.div_ceil(PART_SIZE) as u32
}

impl Fake {
    /// Odd parts get server-relative URLs, even parts absolute ones (like S3 presigned URLs).
    fn part_url(&self, upload_id: &str, n: u32, sig: &str) -> String {
        let rel = format!("/upload/{upload_id}/{n}?expires=9999999999&sig={sig}");
        match n % 2 {
            0 => format!("{}{rel}", self.base),
            _ => rel,
        }
    }

    fn status_json(&self, id: &str) -> Value {
        let up = &self.uploads[id];
        let stored: Vec<Value> = up
            .parts
            .iter()
            .map(|(n, (d, e))| json!({"part_number": n, "size": d.len(), "etag": e}))
            .collect();
        let missing: Vec<Value> = (1..=part_count(up.size))
            .filter(|n| !up.parts.contains_key(n))
            .map(|n| json!({"part_number": n, "url": self.part_url(id, n, "fresh")}))
            .collect();
        json!({
            "upload_id": id, "video_id": up.video_id, "size": up.size, "part_size": PART_SIZE,
            "state": if up.completed { "completed" } else { "open" },
            "parts": stored, "missing": missing,
        })
    }

    fn video_json(&self, id: &str) -> Value {
        let v = &self.videos[id];
        let (status, progress) = match v.polls {
            0 => ("queued", 0.0),
            1 => ("processing", 0.5),
            _ if self.processing_error.is_some() => ("failed", 0.5),
            _ => ("ready", 1.0),
        };
        json!({
            "id": id, "title": v.title, "status": status, "progress": progress,
            "error": if status == "failed" { self.processing_error.clone() } else { None },
            "duration_s": 4.5, "width": 640, "height": 360,
            "renditions": [{"name": "360p", "width": 640, "height": 360,
                            "bandwidth": 800000, "codecs": "avc1.64001e,mp4a.40.2"}],
            "hls_url": format!("/v/{id}/master.m3u8"), "dash_url": format!("/v/{id}/manifest.mpd"),
            "poster_url": format!("/v/{id}/poster.jpg"),
        })
    }

    /// The uploaded bytes, parts concatenated in order.
    fn assembled(&self, upload_id: &str) -> Vec<u8> {
        self.uploads[upload_id]
            .parts
            .values()
            .flat_map(|(d, _)| d.clone())
            .collect()
    }
}

/// `Some(401 response)` unless the bearer token is right.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let want = format!("Bearer {TOKEN}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == want => None,
        _ => Some(err(StatusCode::UNAUTHORIZED, "missing or bad token")),
    }
}

async fn create(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let mut f = s.lock().unwrap();
    let Some(size) = body["size"].as_u64() else {
        return err(StatusCode::BAD_REQUEST, "size is required");
    };
    f.next_id += 1;
    let id = format!("up{}", f.next_id);
    let vid = format!("vid{}", f.next_id);
    let title = body["title"]
        .as_str()
        .or(body["filename"].as_str())
        .unwrap_or("")
        .to_owned();
    f.uploads.insert(
        id.clone(),
        FakeUpload {
            video_id: vid.clone(),
            size,
            completed: false,
            parts: BTreeMap::new(),
        },
    );
    f.videos.insert(vid.clone(), FakeVideo { title, polls: 0 });
    let parts: Vec<Value> = (1..=part_count(size))
        .map(|n| {
            let sig = if f.expire_first_url.contains(&n) {
                "stale"
            } else {
                "ok"
            };
            json!({"part_number": n, "url": f.part_url(&id, n, sig)})
        })
        .collect();
    let out = json!({"upload_id": id, "video_id": vid, "part_size": PART_SIZE,
                     "parts": parts, "expires_at": "2099-01-01T00:00:00Z"});
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn status(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let f = s.lock().unwrap();
    if !f.uploads.contains_key(&id) {
        return err(StatusCode::NOT_FOUND, "no such upload");
    }
    Json(f.status_json(&id)).into_response()
}

async fn put_part(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath((id, n)): UrlPath<(String, u32)>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if headers.contains_key("authorization") {
        return err(
            StatusCode::BAD_REQUEST,
            "part PUTs must not carry Authorization",
        );
    }
    // S3 presigned PUTs refuse chunked bodies; require an exact Content-Length.
    let cl = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if cl != Some(body.len()) {
        return err(StatusCode::LENGTH_REQUIRED, "Content-Length required");
    }
    let mut f = s.lock().unwrap();
    if q.get("sig").map(String::as_str) == Some("stale") {
        f.forbidden_log.push(n);
        return err(StatusCode::FORBIDDEN, "signature expired");
    }
    if let Some(left) = f.fail_500.get_mut(&n) {
        if *left > 0 {
            *left -= 1;
            return err(StatusCode::INTERNAL_SERVER_ERROR, "disk hiccup");
        }
    }
    let Some(up) = f.uploads.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "no such upload");
    };
    let count = part_count(up.size);
    if n == 0 || n > count {
        return err(StatusCode::BAD_REQUEST, "part number out of range");
    }
    let expected = if n == count {
        up.size - PART_SIZE * u64::from(count - 1)
    } else {
        PART_SIZE
    };
    if body.len() as u64 != expected {
        return err(StatusCode::BAD_REQUEST, "wrong part size");
    }
    let etag = format!(
        "\"{n}-{}\"",
        body.iter().map(|&b| u64::from(b)).sum::<u64>()
    );
    up.parts.insert(n, (body.to_vec(), etag.clone()));
    f.put_log.push(n);
    ([("etag", etag)], "").into_response()
}

async fn complete(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let mut f = s.lock().unwrap();
    if let Some(msg) = f.complete_error.clone() {
        return err(StatusCode::BAD_REQUEST, &msg);
    }
    let Some(up) = f.uploads.get(&id) else {
        return err(StatusCode::NOT_FOUND, "no such upload");
    };
    let listed: Vec<(u64, String)> = body["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["part_number"].as_u64().unwrap_or(0),
                p["etag"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = up
        .parts
        .iter()
        .map(|(n, (_, e))| (u64::from(*n), e.clone()))
        .collect();
    if up.parts.len() as u32 != part_count(up.size) || listed != want {
        return err(StatusCode::BAD_REQUEST, "parts do not match what is stored");
    }
    let vid = up.video_id.clone();
    f.uploads.get_mut(&id).unwrap().completed = true;
    (StatusCode::ACCEPTED, Json(f.video_json(&vid))).into_response()
}

async fn video(
    State(s): State<Shared>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Response {
    if let Some(r) = unauthorized(&headers) {
        return r;
    }
    let mut f = s.lock().unwrap();
    let Some(v) = f.videos.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "no such video");
    };
    v.polls += 1;
    Json(f.video_json(&id)).into_response()
}

/// Starts the fake on a free loopback port.
async fn start(fake: Fake) -> (String, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::new(Mutex::new(Fake {
        base: base.clone(),
        ..fake
    }));
    let app = Router::new()
        .route("/api/v1/uploads", post(create))
        .route("/api/v1/uploads/{id}", get(status))
        .route("/api/v1/uploads/{id}/complete", post(complete))
        .route("/api/v1/videos/{id}", get(video))
        .route("/upload/{id}/{n}", put(put_part))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, shared)
}

#[derive(Default)]
struct Recorder {
    started: Mutex<Option<(u64, u64)>>,
    sent: Mutex<u64>,
    done: Mutex<bool>,
    statuses: Mutex<Vec<String>>,
    finished: Mutex<Option<VideoStatus>>,
}

impl Progress for Recorder {
    fn upload_started(&self, total: u64, stored: u64) {
        *self.started.lock().unwrap() = Some((total, stored));
    }
    fn bytes_sent(&self, n: u64) {
        *self.sent.lock().unwrap() += n;
    }
    fn upload_done(&self) {
        *self.done.lock().unwrap() = true;
    }
    fn processing(&self, status: &str, _: f64) {
        self.statuses.lock().unwrap().push(status.to_owned());
    }
    fn finished(&self, v: &VideoInfo) {
        *self.finished.lock().unwrap() = Some(v.status);
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    file: PathBuf,
    data: Vec<u8>,
    opts: UploadOptions,
    client: Client,
    fake: Shared,
}

/// A 4500-byte file (5 parts of 1000, the last 500) and a client for a fresh fake.
async fn setup(fake: Fake) -> Setup {
    let (base, fake) = start(fake).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clip.mp4");
    let data: Vec<u8> = (0..4500u32)
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    std::fs::write(&file, &data).unwrap();
    let opts = UploadOptions {
        title: Some("My clip".into()),
        parallel: 3,
        state_dir: dir.path().join("state"),
        wait: true,
        retry_backoff: Duration::from_millis(1),
        poll_interval: Duration::from_millis(1),
    };
    let client = Client::new(&base, Some(TOKEN.into())).unwrap();
    Setup {
        _dir: dir,
        file,
        data,
        opts,
        client,
        fake,
    }
}

fn sorted(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v
}

fn state_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test]
async fn fresh_upload_sends_every_part_and_completes() {
    let s = setup(Fake::default()).await;
    let rec = Recorder::default();
    let video = upload_file(&s.client, &s.file, &s.opts, &rec)
        .await
        .unwrap();

    assert_eq!(video.status, VideoStatus::Ready);
    assert_eq!(video.title, "My clip");
    assert_eq!(
        s.client.resolve(&video.hls_url).unwrap().as_str(),
        format!(
            "{}master.m3u8",
            s.client.server().join(&format!("v/{}/", video.id)).unwrap()
        )
    );
    let f = s.fake.lock().unwrap();
    assert_eq!(sorted(f.put_log.clone()), [1, 2, 3, 4, 5]);
    assert_eq!(f.assembled("up1"), s.data);
    assert!(f.uploads["up1"].completed);
    drop(f);
    assert_eq!(*rec.started.lock().unwrap(), Some((4500, 0)));
    assert_eq!(*rec.sent.lock().unwrap(), 4500);
    assert!(*rec.done.lock().unwrap());
    assert_eq!(*rec.statuses.lock().unwrap(), ["processing", "ready"]);
    assert_eq!(*rec.finished.lock().unwrap(), Some(VideoStatus::Ready));
    assert_eq!(
        state_files(&s.opts.state_dir),
        0,
        "state removed once ready"
    );
}

#[tokio::test]
async fn resumed_upload_sends_only_missing_parts() {
    let s = setup(Fake::default()).await;
    // An earlier run opened the upload, stored parts 1 and 3, then died.
    let created = s
        .client
        .create_upload(&oxcast_client::CreateUploadRequest {
            filename: "clip.mp4".into(),
            size: 4500,
            title: None,
        })
        .await
        .unwrap();
    for n in [1u32, 3] {
        let url = &created.parts[n as usize - 1].url;
        let r = (n as usize - 1) * 1000..n as usize * 1000;
        s.client
            .put_part(n, url, s.data[r].to_vec().into(), |_| {})
            .await
            .unwrap();
    }
    let ident = FileIdentity::of(&s.file).unwrap();
    let path = state::state_path(&s.opts.state_dir, &ident, s.client.server());
    state::save(
        &path,
        &SavedUpload {
            upload_id: created.upload_id.clone(),
            video_id: created.video_id.clone(),
            part_size: created.part_size,
            size: 4500,
        },
    )
    .unwrap();
    s.fake.lock().unwrap().put_log.clear();

    let rec = Recorder::default();
    let video = upload_file(&s.client, &s.file, &s.opts, &rec)
        .await
        .unwrap();

    assert_eq!(video.id, created.video_id);
    let f = s.fake.lock().unwrap();
    assert_eq!(sorted(f.put_log.clone()), [2, 4, 5]);
    assert_eq!(f.uploads.len(), 1, "no second upload was opened");
    assert_eq!(f.assembled(&created.upload_id), s.data);
    drop(f);
    assert_eq!(*rec.started.lock().unwrap(), Some((4500, 2000)));
    assert_eq!(*rec.sent.lock().unwrap(), 2500);
    assert!(!path.exists());
}

#[tokio::test]
async fn expired_part_url_is_refreshed_and_retried() {
    let s = setup(Fake {
        expire_first_url: HashSet::from([2, 5]),
        ..Fake::default()
    })
    .await;
    let rec = Recorder::default();
    upload_file(&s.client, &s.file, &s.opts, &rec)
        .await
        .unwrap();
    let f = s.fake.lock().unwrap();
    assert_eq!(sorted(f.forbidden_log.clone()), [2, 5]);
    assert_eq!(sorted(f.put_log.clone()), [1, 2, 3, 4, 5]);
    assert_eq!(f.assembled("up1"), s.data);
    drop(f);
    // Bytes of the refused attempts are not counted twice.
    assert_eq!(*rec.sent.lock().unwrap(), 4500);
}

#[tokio::test]
async fn server_errors_on_parts_are_retried_then_reported() {
    let s = setup(Fake {
        fail_500: HashMap::from([(4, 2)]),
        ..Fake::default()
    })
    .await;
    upload_file(&s.client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap();
    assert_eq!(
        sorted(s.fake.lock().unwrap().put_log.clone()),
        [1, 2, 3, 4, 5]
    );

    // A part that keeps failing gives up after 4 retries, naming the part and the server text.
    let s = setup(Fake {
        fail_500: HashMap::from([(3, 100)]),
        ..Fake::default()
    })
    .await;
    let err = upload_file(&s.client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Part {
                part_number: 3,
                status: 500,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "upload of part 3 failed: HTTP 500: disk hiccup"
    );
    assert_eq!(s.fake.lock().unwrap().fail_500[&3], 95, "1 try + 4 retries");
    assert_eq!(
        state_files(&s.opts.state_dir),
        1,
        "state kept for a later resume"
    );
}

#[tokio::test]
async fn complete_400_surfaces_the_server_error() {
    let s = setup(Fake {
        complete_error: Some("part 3: etag mismatch".into()),
        ..Fake::default()
    })
    .await;
    let err = upload_file(&s.client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap_err();
    match &err {
        Error::Api {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(message, "part 3: etag mismatch");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "complete upload up1: server answered HTTP 400: part 3: etag mismatch"
    );
    assert_eq!(
        state_files(&s.opts.state_dir),
        1,
        "state kept for a later resume"
    );
}

#[tokio::test]
async fn completed_upload_in_state_skips_to_waiting() {
    let s = setup(Fake::default()).await;
    let no_wait = UploadOptions {
        wait: false,
        ..s.opts.clone()
    };
    // Without waiting: returns the queued video and forgets the state.
    let v = upload_file(&s.client, &s.file, &no_wait, &oxcast_client::NoProgress)
        .await
        .unwrap();
    assert_eq!(v.status, VideoStatus::Queued);
    assert_eq!(state_files(&s.opts.state_dir), 0);

    // Put the state back, as if a waiting run had been interrupted after `complete`.
    let ident = FileIdentity::of(&s.file).unwrap();
    let path = state::state_path(&s.opts.state_dir, &ident, s.client.server());
    state::save(
        &path,
        &SavedUpload {
            upload_id: "up1".into(),
            video_id: v.id.clone(),
            part_size: PART_SIZE,
            size: 4500,
        },
    )
    .unwrap();
    s.fake.lock().unwrap().put_log.clear();
    let rec = Recorder::default();
    let ready = upload_file(&s.client, &s.file, &s.opts, &rec)
        .await
        .unwrap();
    assert_eq!(ready.id, v.id);
    assert_eq!(ready.status, VideoStatus::Ready);
    assert!(s.fake.lock().unwrap().put_log.is_empty());
    assert_eq!(*rec.started.lock().unwrap(), Some((4500, 4500)));
    assert!(!path.exists());
}

#[tokio::test]
async fn unknown_upload_in_state_starts_over() {
    let s = setup(Fake::default()).await;
    let ident = FileIdentity::of(&s.file).unwrap();
    let path = state::state_path(&s.opts.state_dir, &ident, s.client.server());
    state::save(
        &path,
        &SavedUpload {
            upload_id: "gone".into(),
            video_id: "gone".into(),
            part_size: PART_SIZE,
            size: 4500,
        },
    )
    .unwrap();
    let v = upload_file(&s.client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap();
    assert_eq!(v.id, "vid1");
    assert_eq!(
        sorted(s.fake.lock().unwrap().put_log.clone()),
        [1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn processing_failure_is_an_error_with_the_reason() {
    let s = setup(Fake {
        processing_error: Some("no video stream found".into()),
        ..Fake::default()
    })
    .await;
    let err = upload_file(&s.client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ProcessingFailed { video_id, reason }
            if video_id == "vid1" && reason == "no video stream found"),
        "{err:?}"
    );
    assert_eq!(state_files(&s.opts.state_dir), 0);
}

#[tokio::test]
async fn wrong_token_names_the_step_and_hints() {
    let s = setup(Fake::default()).await;
    let client = Client::new(s.client.server().as_str(), Some("wrong".into())).unwrap();
    let err = upload_file(&client, &s.file, &s.opts, &oxcast_client::NoProgress)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "create upload for clip.mp4: server answered HTTP 401: missing or bad token \
         (missing or wrong API token?)"
    );
}

#[tokio::test]
async fn unreachable_server_is_a_network_error() {
    // Bind and drop to get a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::new(&format!("127.0.0.1:{port}"), None).unwrap();
    let err = client.video("x").await.unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "get video x: could not reach http://127.0.0.1:{port}/api/v1/videos/x: "
        )),
        "{text}"
    );
}
