//! The live origin: the stable per-stream manifests, blocking media playlists, and the parts,
//! segments and init segments of the current session.
//!
//! Viewers use stable URLs per stream (`/live/{stream}/master.m3u8`, `/live/{stream}/manifest.mpd`)
//! that always point at the current session; everything below them is addressed by session
//! (`/live/{stream}/{session}/{rendition}/…`), so segment and part URLs are unique forever and a
//! CDN may cache them as immutable.
//!
//! Cache lifetimes are what a CDN in front needs (`deploy/nginx/oxcast-cache.conf`): a blocking
//! reload's answer for about one part (its URL names the part it waited for, so it is the right
//! answer for everyone asking the same question), a plain media playlist, the master and the MPD
//! for about half a segment. Manifests are compressed (gzip or brotli) once per rendered version.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use oxcast_base::{SessionId, StreamId};
use oxcast_live::{LiveError, LiveObject};
use oxcast_media::compress::{self, Coding, Compressible};
use serde::Deserialize;

use crate::limits::{ClientAddr, Refused};
use crate::origin::{content_type, IMMUTABLE};
use crate::AppState;

#[derive(Debug, Deserialize)]
pub struct Watching {
    /// The viewer's id, random and kept for the browser tab.
    session: String,
    /// The page is closing.
    #[serde(default)]
    leaving: bool,
}

/// A viewer's heartbeat (`POST /live/{stream}/watching`): no token (viewers have none), never
/// cached, so it reaches the origin through any CDN.
pub async fn watching(
    State(state): State<AppState>,
    Path(stream_id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Ok(stream) = stream_id.parse::<StreamId>() else {
        return live_error(LiveError::NotFound("stream".into()));
    };
    // sendBeacon may send the JSON as text/plain: the body is read as JSON whatever its type.
    let w: Watching = match serde_json::from_slice(&body) {
        Ok(w) => w,
        Err(e) => {
            return live_error(LiveError::BadRequest(format!(
                "expected {{\"session\": \"…\"}}: {e}"
            )))
        }
    };
    // Counted where the stream is encoded, or here and reported to it.
    let beat = match (state.live.as_ref(), state.live_serve.replica.as_ref()) {
        (Some(m), _) if m.runs(stream) => m.viewer_beat(stream, &w.session, w.leaving),
        (_, Some(r)) => r.viewer_beat(stream, &w.session, w.leaving).await,
        (Some(m), None) => m.viewer_beat(stream, &w.session, w.leaving),
        (None, None) => Err(LiveError::NotLive),
    };
    match beat {
        Ok(()) => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => live_error(e),
    }
}

/// Viewers asking too early, too late or for nothing are routine (DEBUG); only the server's own
/// failures are errors.
fn live_error(e: LiveError) -> Response {
    let status = match &e {
        LiveError::NotLive | LiveError::NotFound(_) => StatusCode::NOT_FOUND,
        LiveError::Starting | LiveError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        LiveError::BadRequest(_) => StatusCode::BAD_REQUEST,
        LiveError::Busy(_) | LiveError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "live origin request failed");
    } else {
        tracing::debug!(error = %e, %status, "live origin request not served");
    }
    let mut r = (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A manifest response: compressed as the client accepts, cacheable for `max_age_s`.
/// The coding the client takes, read from `Accept-Encoding`. Handlers take this rather than
/// the request's headers: a blocking reload is held for up to a few seconds by each of
/// thousands of viewers, and whatever its handler holds is held that long.
pub struct Accepts(Coding);

impl<S: Send + Sync> FromRequestParts<S> for Accepts {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Accepts(compress::negotiate(
            parts
                .headers
                .get(header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        )))
    }
}

fn manifest(ctype: &'static str, max_age_s: u64, body: &Compressible, coding: Coding) -> Response {
    let (bytes, used) = body.get(coding);
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age_s}")) {
        h.insert(header::CACHE_CONTROL, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Some(name) = used.header() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
    }
    r
}

/// A held request over the cap: 503 with `Retry-After`.
fn refused(r: Refused) -> Response {
    metrics::counter!("oxcast_live_blocking_refused_total").increment(1);
    live_error(LiveError::Busy(match r {
        Refused::Addr => "too many held playlist and part requests from this address".into(),
        Refused::Total => "the server holds as many playlist and part requests as it can".into(),
    }))
}

/// Seconds a CDN may keep a live answer: `max-age` is whole seconds, and 0 would defeat
/// request collapsing.
fn secs(s: f64) -> u64 {
    (s.round() as u64).max(1)
}

/// `/live/{stream}/master.m3u8` and `/live/{stream}/manifest.mpd`.
pub async fn stable(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    Accepts(coding): Accepts,
) -> Response {
    let Ok(stream) = id.parse::<StreamId>() else {
        return live_error(LiveError::NotLive);
    };
    let live = &state.live_serve;
    let half_segment = secs(state.config.live.segment_s / 2.0);
    let result = match file.as_str() {
        "master.m3u8" => live
            .master(stream)
            .await
            .map(|b| manifest("application/vnd.apple.mpegurl", half_segment, &b, coding)),
        "manifest.mpd" => live
            .mpd(stream)
            .await
            .map(|b| manifest("application/dash+xml", half_segment, &b, coding)),
        _ => Err(LiveError::NotFound(file)),
    };
    result.unwrap_or_else(live_error)
}

/// `/live/{stream}/{session}/{rendition}/{file}`: blocking media playlists, init segments,
/// parts and segments.
pub async fn session_file(
    State(state): State<AppState>,
    Path((id, session, rendition, file)): Path<(String, String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    ClientAddr(addr): ClientAddr,
    Accepts(coding): Accepts,
) -> Response {
    let manager = &state.live_serve;
    let (Ok(stream), Ok(session)) = (id.parse::<StreamId>(), session.parse::<SessionId>()) else {
        return live_error(LiveError::NotFound("object".into()));
    };
    let safe = |s: &str| {
        !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if !safe(&rendition) || !safe(&file) {
        return live_error(LiveError::NotFound("object".into()));
    }
    let cfg = &state.config.live;
    if file == "index.m3u8" {
        let num = |k: &str| q.get(k).map(|v| v.parse::<u64>());
        let (msn, part) = match (num("_HLS_msn").transpose(), num("_HLS_part").transpose()) {
            (Ok(m), Ok(p)) => (m, p),
            _ => {
                return live_error(LiveError::BadRequest(
                    "_HLS_msn and _HLS_part must be numbers".into(),
                ))
            }
        };
        let skip = q.get("_HLS_skip").is_some_and(|v| v == "YES" || v == "v2");
        // Nothing more is read from the query; its strings need not be held with the request.
        drop(q);
        // A held request costs a task, a connection and its buffers: capped per address and in
        // total, so a flood of them cannot exhaust memory or descriptors.
        let _permit = match msn {
            None => None,
            Some(_) => match state.blocking_gate.try_acquire(addr) {
                Ok(p) => Some(p),
                Err(r) => return refused(r),
            },
        };
        let max_age = if msn.is_some() {
            secs(cfg.part_s)
        } else {
            secs(cfg.segment_s / 2.0)
        };
        return match manager
            .media_playlist(stream, session, &rendition, msn, part, skip)
            .await
        {
            Ok(body) => manifest("application/vnd.apple.mpegurl", max_age, &body, coding),
            Err(e) => live_error(e),
        };
    }
    let Some(ctype) = content_type(&file) else {
        return live_error(LiveError::NotFound("object".into()));
    };
    // A part may be asked for before it exists (the preload hint), and a segment while it is
    // written (low-latency DASH): both are held, and count as held requests.
    let permit = if file.starts_with("part-") || file.starts_with("seg-") {
        match state.blocking_gate.try_acquire(addr) {
            Ok(p) => Some(p),
            Err(r) => return refused(r),
        }
    } else {
        None
    };
    let headers = [
        (header::CONTENT_TYPE, ctype),
        (header::CACHE_CONTROL, IMMUTABLE),
    ];
    match manager.object(stream, session, &rendition, &file).await {
        Ok(LiveObject::Whole(bytes)) => (headers, bytes).into_response(),
        // No length: chunked transfer, each part as it is written. The permit is held until
        // the last chunk is sent.
        Ok(LiveObject::Growing(chunks)) => {
            let body = chunks.map(move |c| {
                let _held = &permit;
                c
            });
            (headers, Body::from_stream(body)).into_response()
        }
        Err(e) => live_error(e),
    }
}

/// The clock DASH players synchronise to (`UTCTiming`, http-iso).
pub async fn time(State(state): State<AppState>) -> Response {
    let now = state.clock.now_ms();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.max(0) as u64);
    (
        [
            (header::CONTENT_TYPE, "text/plain"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        humantime::format_rfc3339_millis(t).to_string(),
    )
        .into_response()
}
