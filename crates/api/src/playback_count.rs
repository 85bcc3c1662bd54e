//! Request counting for the playback routes, the hottest in the server: every viewer asks for a
//! playlist, part or segment several times a second.
//!
//! Everything else is counted by a general middleware (`count_requests`), which labels each
//! request with its matched route. Here the labels are known in advance, so the counters for the
//! usual answers are looked up once and kept ([`Counters`]); each request costs an atomic add,
//! not a registry lookup. The layer is a plain tower service with a named future, not an axum
//! `from_fn` middleware, which boxes a future and clones the inner service per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use metrics::Counter;
use tower::{Layer, Service};

/// The playback routes, as they are labelled.
pub const PLAYBACK_ROUTES: [&str; 3] = [
    "/v/{video_id}/{*path}",
    "/live/{stream_id}/{file}",
    "/live/{stream_id}/{session_id}/{rendition}/{file}",
];

const METHODS: [&str; 2] = ["GET", "HEAD"];
const STATUSES: [u16; 6] = [200, 206, 304, 404, 416, 503];

/// Counters by route, method and usual status.
struct Counters([[[Counter; STATUSES.len()]; METHODS.len()]; PLAYBACK_ROUTES.len()]);

/// Built on first use: the metrics recorder is installed at start-up, before any request.
fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(|| {
        Counters(PLAYBACK_ROUTES.map(|route| {
            METHODS.map(|method| {
                STATUSES.map(|status| {
                    metrics::counter!(
                        "oxcast_http_requests_total",
                        "route" => route,
                        "method" => method,
                        "status" => status.to_string()
                    )
                })
            })
        }))
    })
}

fn count(route: Option<usize>, head: bool, status: u16) {
    let known = STATUSES.iter().position(|s| *s == status);
    match (route, known) {
        (Some(r), Some(s)) => counters().0[r][usize::from(head)][s].increment(1),
        _ => metrics::counter!(
            "oxcast_http_requests_total",
            "route" => route.map_or("unmatched", |r| PLAYBACK_ROUTES[r]),
            "method" => METHODS[usize::from(head)],
            "status" => status.to_string()
        )
        .increment(1),
    }
}

/// Counts a VOD playback request answered ahead of the router (`origin::fast`).
pub(crate) fn count_vod(head: bool, status: u16) {
    count(Some(0), head, status);
}

/// Counts each playback request by route, method and status.
#[derive(Clone, Copy, Default)]
pub struct CountPlayback;

impl<S> Layer<S> for CountPlayback {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
}

impl<S> Service<Request> for Counted<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .and_then(|p| PLAYBACK_ROUTES.iter().position(|r| *r == p.as_str()));
        let head = req.method() == Method::HEAD;
        CountedFuture {
            inner: self.inner.call(req),
            route,
            head,
        }
    }
}

pin_project_lite::pin_project! {
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        route: Option<usize>,
        head: bool,
    }
}

impl<F, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Ok(resp) = &out {
            count(*this.route, *this.head, resp.status().as_u16());
        }
        Poll::Ready(out)
    }
}
