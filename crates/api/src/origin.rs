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
use oxcast_db::VideoStatus;
use oxcast_store::keys;

use crate::error::{ApiError, ApiResult};
use crate::videos::parse_video_id;
use crate::AppState;

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

/// A single byte range from a `Range` header, resolved against the object size.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(std::ops::Range<u64>),
    Unsatisfiable,
}

pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    // Multiple ranges are legal but no player asks for them; serve the whole object instead.
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeRequest::Full,
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return RangeRequest::Full;
            };
            if n == 0 {
                return RangeRequest::Unsatisfiable;
            }
            size.saturating_sub(n)..size
        }
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeRequest::Full;
            };
            let end = if b.is_empty() {
                size
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => (e + 1).min(size),
                    _ => return RangeRequest::Full,
                }
            };
            start..end
        }
    };
    if range.start >= size || range.is_empty() {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

fn quote_etag(e: &str) -> String {
    if e.starts_with('"') || e.starts_with("W/") {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
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
) -> ApiResult<Response> {
    let not_found = || ApiError::NotFound("object".into());
    let id = parse_video_id(&video).map_err(|_| not_found())?;
    let ctype = content_type(&path).ok_or_else(not_found)?;
    let key = keys::video_object(id, &path).map_err(|_| not_found())?;
    match state.db.video(id).await? {
        Some(v) if v.status == VideoStatus::Ready => {}
        _ => return Err(not_found()),
    }
    let meta = state.store.head(&key).await?.ok_or_else(not_found)?;
    let etag = meta.etag.as_deref().map(quote_etag);
    let last_modified = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.last_modified.max(0) as u64),
    );

    let mut common = HeaderMap::new();
    common.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    common.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(e) = etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
        common.insert(header::ETAG, e);
    }
    if let Ok(v) = HeaderValue::from_str(&last_modified) {
        common.insert(header::LAST_MODIFIED, v);
    }

    if let (Some(inm), Some(etag)) = (headers.get(header::IF_NONE_MATCH), &etag) {
        let inm = inm.to_str().unwrap_or_default();
        if none_match_hits(inm, etag) {
            return Ok((StatusCode::NOT_MODIFIED, common).into_response());
        }
    }

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // A stale If-Range means the client's copy changed: send the whole object.
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => etag.as_deref() == Some(v.trim()) || v.trim() == last_modified,
    };
    let range = if if_range_ok {
        parse_range(range_header, meta.size)
    } else {
        RangeRequest::Full
    };
    let (status, range) = match range {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
        RangeRequest::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable { size: meta.size });
        }
    };
    let obj = state.store.get(&key, range.clone()).await?;
    let len = obj.range.end - obj.range.start;
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if range.is_some() {
        let cr = format!(
            "bytes {}-{}/{}",
            obj.range.start,
            obj.range.end - 1,
            obj.meta.size
        );
        if let Ok(v) = HeaderValue::from_str(&cr) {
            common.insert(header::CONTENT_RANGE, v);
        }
    }
    metrics::counter!("oxcast_origin_bytes_total").increment(len);
    Ok((status, common, Body::from_stream(obj.body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeRequest::*;

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
    fn ranges() {
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Partial(0..4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Partial(5..10));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Partial(8..10));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
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
