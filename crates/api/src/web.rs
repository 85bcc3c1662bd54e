//! The web UI, embedded in the binary: pages and scripts from `web/`, players and charts from npm.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../../../web/index.html");
const WATCH: &str = include_str!("../../../web/watch.html");
const STREAMS: &str = include_str!("../../../web/streams.html");
const LIVE: &str = include_str!("../../../web/live.html");
const ADMIN: &str = include_str!("../../../web/admin.html");
const DASHBOARD: &str = include_str!("../../../web/dashboard.html");

/// `(name, content type, body)` of everything under `/static/`.
const STATIC: &[(&str, &str, &[u8])] = &[
    (
        "admin.js",
        JS,
        include_bytes!("../../../web/static/admin.js"),
    ),
    ("api.js", JS, include_bytes!("../../../web/static/api.js")),
    ("app.js", JS, include_bytes!("../../../web/static/app.js")),
    (
        "dashboard.js",
        JS,
        include_bytes!("../../../web/static/dashboard.js"),
    ),
    ("live.js", JS, include_bytes!("../../../web/static/live.js")),
    (
        "player.js",
        JS,
        include_bytes!("../../../web/static/player.js"),
    ),
    (
        "streams.js",
        JS,
        include_bytes!("../../../web/static/streams.js"),
    ),
    (
        "upload.js",
        JS,
        include_bytes!("../../../web/static/upload.js"),
    ),
    (
        "watch.js",
        JS,
        include_bytes!("../../../web/static/watch.js"),
    ),
    (
        "style.css",
        CSS,
        include_bytes!("../../../web/static/style.css"),
    ),
    (
        "vendor/hls.min.js",
        JS,
        include_bytes!(concat!(env!("OUT_DIR"), "/hls.min.js")),
    ),
    (
        "vendor/dash.all.min.js",
        JS,
        include_bytes!(concat!(env!("OUT_DIR"), "/dash.all.min.js")),
    ),
    (
        "vendor/uPlot.iife.min.js",
        JS,
        include_bytes!(concat!(env!("OUT_DIR"), "/uPlot.iife.min.js")),
    ),
    (
        "vendor/uPlot.min.css",
        CSS,
        include_bytes!(concat!(env!("OUT_DIR"), "/uPlot.min.css")),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { page(INDEX) }))
        .route("/watch/{video_id}", get(|| async { page(WATCH) }))
        .route("/streams", get(|| async { page(STREAMS) }))
        .route("/streams/{stream_id}", get(|| async { page(LIVE) }))
        .route(
            "/streams/{stream_id}/dashboard",
            get(|| async { page(DASHBOARD) }),
        )
        .route("/admin", get(|| async { page(ADMIN) }))
        .route("/static/{*file}", get(asset))
}

fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HTML),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    match STATIC.iter().find(|(name, _, _)| *name == file) {
        // Not content-addressed, so browsers revalidate; the binary is the version.
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, *ctype),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
