//! The way in for VOD playback, the most frequent request there is: `GET`/`HEAD
//! /v/{video}/{path}` is answered by the origin directly, ahead of the router.
//!
//! On a cached playlist the router's matching, its per-route layers and the CORS layer cost
//! about as much as the origin's own work (perf); viewers ask for playlists and segments many
//! times a second each. What those layers would have added is added here: the CORS headers
//! (any origin, as the router's layer allows) and the request count. Everything else, a path
//! with percent-escapes included, goes through the router as before.

use axum::http::{header, HeaderValue, Method, Request};
use axum::response::Response;

use crate::playback_count;
use crate::AppState;

/// `access-control-expose-headers`, as the router's CORS layer sends it.
pub const EXPOSE: &str = "etag,content-length,content-range,accept-ranges";

#[derive(Clone)]
pub struct FastPlayback {
    state: AppState,
}

impl FastPlayback {
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    /// Whether the fast path answers `req`.
    pub fn takes<B>(req: &Request<B>) -> bool {
        (req.method() == Method::GET || req.method() == Method::HEAD)
            && split(req.uri().path()).is_some()
    }

    /// Answers a request that [`FastPlayback::takes`].
    pub async fn serve<B>(&self, req: Request<B>) -> Response {
        let head = req.method() == Method::HEAD;
        let Some((video, path)) = split(req.uri().path()) else {
            unreachable!("FastPlayback::serve is only called for requests it takes");
        };
        let mut resp = super::respond(&self.state, video, path, req.headers()).await;
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE),
        );
        playback_count::count_vod(head, resp.status().as_u16());
        resp
    }
}

/// `/v/{video}/{path}` → (video, path), for paths the router would match the same way: a
/// non-empty video segment and object path, and no percent-escapes (which the router decodes).
fn split(uri_path: &str) -> Option<(&str, &str)> {
    let rest = uri_path.strip_prefix("/v/")?;
    let (video, path) = rest.split_once('/')?;
    (!video.is_empty() && !path.is_empty() && !uri_path.contains('%')).then_some((video, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_what_the_router_would_route_to_the_origin() {
        assert_eq!(split("/v/abc/master.m3u8"), Some(("abc", "master.m3u8")));
        assert_eq!(
            split("/v/abc/720p/seg-1.m4s"),
            Some(("abc", "720p/seg-1.m4s"))
        );
        for p in [
            "/v/abc",
            "/v/abc/",
            "/v//x.m3u8",
            "/v/abc/a%2Fb.m4s",
            "/api/v1/videos",
            "/",
        ] {
            assert_eq!(split(p), None, "{p}");
        }
        let req = |m: Method, u: &str| Request::builder().method(m).uri(u).body(()).unwrap();
        assert!(FastPlayback::takes(&req(Method::GET, "/v/a/b.m3u8?x=1")));
        assert!(FastPlayback::takes(&req(Method::HEAD, "/v/a/b.m3u8")));
        assert!(!FastPlayback::takes(&req(Method::OPTIONS, "/v/a/b.m3u8")));
        assert!(!FastPlayback::takes(&req(Method::DELETE, "/v/a/b.m3u8")));
    }
}
