//! The playback origin: serves a ready video's manifests, segments and poster.
//!
//! Everything under `/v/{video}/` is immutable once published (a re-encode would be a new
//! video), so it is cached for a year; a CDN in front only ever revalidates by ETag. Only names
//! of the shapes the packager writes are served, and only for videos that are `ready`, so a
//! half-published video is never visible.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oxcast_media::compress as encoding;
use oxcast_store::keys;

use cache::Miss;
pub use cache::OriginCache;
pub use range::{parse_range, RangeRequest};

use crate::error::{ApiError, ApiResult};
use crate::videos::parse_video_id;
use crate::AppState;

mod cache;
pub mod fast;
mod range;

pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Content type by extension; anything else is not ours to serve.
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "m3u8" => "application/vnd.apple.mpegurl",
        "mpd" => "application/dash+xml",
        "mp4" => "video/mp4",
        "m4s" => "video/iso.segment",
        "jpg" => "image/jpeg",
        _ => return None,
    })
}

/// `If-None-Match` uses the weak comparison (RFC 9110 13.1.2): `W/"x"` matches `"x"`.
fn none_match_hits(header: &str, etag: &str) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_string()
    };
    let ours = opaque(etag);
    header
        .split(',')
        .any(|t| t.trim() == "*" || opaque(t) == ours)
}

pub async fn serve(
    State(state): State<AppState>,
    Path((video, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    respond(&state, &video, &path, &headers).await
}

/// The answer to `GET /v/{video}/{path}`, for the router and for the fast path in front of it
/// ([`fast`]).
pub async fn respond(state: &AppState, video: &str, path: &str, headers: &HeaderMap) -> Response {
    answer(state, video, path, headers)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn answer(
    state: &AppState,
    video: &str,
    path: &str,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound("object".into());
    let id = parse_video_id(video).map_err(|_| not_found())?;
    let ctype = content_type(path).ok_or_else(not_found)?;
    let miss = |m: Miss| match m {
        Miss::NotFound => not_found(),
        Miss::Failed(e) => ApiError::Internal(e),
    };
    state.origin.ready(&state.db, id).await.map_err(miss)?;
    let obj = state
        .origin
        .object(&state.store, id, path)
        .await
        .map_err(miss)?;

    let mut common = HeaderMap::with_capacity(8);
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    common.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = &obj.etag {
        common.insert(header::ETAG, e.clone());
    }
    common.insert(header::LAST_MODIFIED, obj.last_modified.clone());
    let compressible = is_text(ctype);
    if compressible {
        common.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }

    if let (Some(inm), Some(etag)) = (headers.get(header::IF_NONE_MATCH), &obj.etag_text) {
        let inm = inm.to_str().unwrap_or_default();
        let coded = ["br", "gzip"].map(|c| coded_etag(etag, c));
        if none_match_hits(inm, etag) || coded.iter().any(|e| none_match_hits(inm, e)) {
            return Ok((StatusCode::NOT_MODIFIED, common).into_response());
        }
    }

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A stale If-Range means the client's copy changed: send the whole object.
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => obj.etag_text.as_deref() == Some(v.trim()) || v.trim() == obj.last_modified_text,
    };
    let range = if if_range_ok {
        parse_range(range_header, obj.size)
    } else {
        RangeRequest::Full
    };
    let range = match range {
        RangeRequest::Full => None,
        RangeRequest::Partial(r) => Some(r),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size: obj.size });
        }
    };
    if let Some(r) = &range {
        let cr = format!("bytes {}-{}/{}", r.start, r.end - 1, obj.size);
        if let Ok(v) = HeaderValue::from_str(&cr) {
            common.insert(header::CONTENT_RANGE, v);
        }
    }
    let status = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };

    // Small objects come from memory, compressed when the client takes it (whole bodies only:
    // a range is of the identity bytes).
    if let Some(body) = &obj.body {
        let bytes = match &range {
            Some(r) => body.identity().slice(r.start as usize..r.end as usize),
            None if compressible => {
                let coding = encoding::negotiate(
                    headers
                        .get(header::ACCEPT_ENCODING)
                        .and_then(|v| v.to_str().ok()),
                );
                let (b, used) = body.get(coding);
                if let Some(name) = used.header() {
                    common.insert(header::CONTENT_ENCODING, HeaderValue::from_static(name));
                    // Each coding is a different representation: its own strong ETag.
                    if let Some(v) = obj
                        .etag_text
                        .as_deref()
                        .and_then(|e| HeaderValue::from_str(&coded_etag(e, name)).ok())
                    {
                        common.insert(header::ETAG, v);
                    }
                }
                b
            }
            None => body.identity().clone(),
        };
        origin_bytes().increment(bytes.len() as u64);
        return Ok((status, common, bytes).into_response());
    }

    let key = keys::video_object(id, path).map_err(|_| not_found())?;
    let read = state.store.get(&key, range).await?;
    let len = read.range.end - read.range.start;
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    origin_bytes().increment(len);
    Ok((status, common, Body::from_stream(read.body)).into_response())
}

/// Looked up once: the registry lookup would cost more than serving a cached playlist's bytes.
fn origin_bytes() -> &'static metrics::Counter {
    static C: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
    C.get_or_init(|| metrics::counter!("oxcast_origin_bytes_total"))
}

/// The ETag of a compressed form: the identity's with the coding inside the quotes.
fn coded_etag(etag: &str, coding: &str) -> String {
    match etag.strip_suffix('"') {
        Some(inner) => format!("{inner}-{coding}\""),
        None => format!("{etag}-{coding}"),
    }
}

/// Manifests are text and worth compressing; media is not.
fn is_text(ctype: &str) -> bool {
    ctype == "application/vnd.apple.mpegurl" || ctype == "application/dash+xml"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_compares_weakly() {
        assert!(none_match_hits("\"abc\"", "\"abc\""));
        assert!(none_match_hits("W/\"abc\"", "\"abc\""));
        assert!(none_match_hits("\"abc\"", "W/\"abc\""));
        assert!(none_match_hits("\"x\", W/\"abc\"", "\"abc\""));
        assert!(none_match_hits("*", "\"abc\""));
        assert!(!none_match_hits("W/\"abd\"", "\"abc\""));
        assert!(!none_match_hits("abc", "\"abc\""));
    }

    #[test]
    fn only_packager_names_are_served() {
        assert_eq!(content_type("720p/seg-1.m4s"), Some("video/iso.segment"));
        assert_eq!(
            content_type("master.m3u8"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(content_type("manifest.mpd"), Some("application/dash+xml"));
        assert_eq!(content_type("source"), None);
        assert_eq!(content_type("x.html"), None);
    }
}
