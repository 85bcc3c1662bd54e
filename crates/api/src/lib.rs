//! The HTTP edge of oxcast.
//!
//! - `/api/v1/…`: the JSON API (uploads, videos), optionally behind a bearer token, described by
//!   an OpenAPI document generated from these handlers ([`openapi`]).
//! - `/upload/{upload}/{part}?expires&sig`: part uploads behind HMAC-signed, expiring URLs
//!   ([`signing`], [`uploads`]), the embedded stand-in for S3 presigned part URLs.
//! - `/v/{video}/…`: the playback origin ([`origin`]) with CDN-friendly caching, ranges, ETags
//!   and CORS.
//! - `/`, `/watch/{video}`, `/static/…`: the web UI ([`web`]); `/metrics`, `/healthz`.

pub mod admin;
pub mod error;
pub mod limits;
pub mod live;
pub mod live_origin;
pub mod openapi;
pub mod origin;
mod playback_count;
pub mod serve;
pub mod signing;
pub mod uploads;
mod uploads_s3;
pub mod videos;
pub mod web;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use oxcast_base::clock::SharedClock;
use oxcast_base::Config;
use oxcast_db::Db;
use oxcast_store::Store;
use playback_count::PLAYBACK_ROUTES;
use std::time::Duration;
use tokio::sync::Notify;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use error::ApiError;
pub use signing::Signer;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Db,
    pub store: Store,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub signer: Signer,
    /// Wakes idle workers when an upload completes.
    pub wake: Arc<Notify>,
    pub metrics: Option<PrometheusHandle>,
    /// Live streaming, when enabled.
    pub live: Option<Arc<oxcast_live::LiveManager>>,
    /// The live origin: this node's sessions, else what other nodes published.
    pub live_serve: Arc<oxcast_live::LiveServe>,
    /// Part uploads in flight, per address and in total.
    pub part_gate: limits::Gate,
    /// LL-HLS blocking playlist requests held, per address and in total.
    pub blocking_gate: limits::Gate,
    /// Ready videos and published objects the VOD origin keeps in memory.
    pub origin: origin::OriginCache,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

/// Which route groups a process serves, from its roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    /// The JSON API, part uploads, the VOD origin and the web UI (`api` role).
    pub api: bool,
    /// The live origin: streams this node encodes (`live` role) and, with the `api` role, any
    /// other node's, from the bucket.
    pub live: bool,
}

impl Routes {
    pub const ALL: Routes = Routes {
        api: true,
        live: true,
    };
}

/// The HTTP routes of `routes`' groups; `/healthz` and `/metrics` always.
pub fn router(state: AppState, routes: Routes) -> Router {
    let api = Router::new()
        .route("/uploads", axum::routing::post(uploads::create))
        .route("/uploads/{upload_id}", get(uploads::status))
        .route(
            "/uploads/{upload_id}/complete",
            axum::routing::post(uploads::complete),
        )
        .route("/videos", get(videos::list))
        .route(
            "/videos/{video_id}",
            get(videos::get).delete(videos::delete),
        )
        .route("/live-streams", get(live::list).post(live::create))
        .route("/live-streams/{id}", get(live::get).delete(live::delete))
        .route(
            "/live-streams/{id}/reset-key",
            axum::routing::post(live::reset_key),
        )
        .route("/live-streams/{id}/latency", get(live::latency))
        .route("/live-streams/{id}/health", get(live::health))
        .route("/admin/jobs", get(admin::jobs))
        .route("/admin/nodes", get(admin::nodes))
        .route("/admin/stats", get(admin::stats))
        .route(
            "/admin/jobs/{job_id}/retry",
            axum::routing::post(admin::retry),
        )
        .route("/openapi.json", get(openapi::serve))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));

    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::any())
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::POST,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::RANGE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([
            header::ETAG,
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ACCEPT_RANGES,
        ])
        .max_age(std::time::Duration::from_secs(86_400))
        // Any origin is allowed, so responses do not depend on the request's Origin: no Vary
        // on it, or a CDN would keep one copy of every segment per requesting site.
        .vary([]);

    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text));
    // Playback: what every viewer fetches, several times a second each. Only the layers it
    // needs (CORS, the request counter); no per-request span or request id, whose cost is
    // most of what a cached playlist costs to serve.
    let mut playback = Router::new();
    if routes.api {
        app = app
            .nest("/api/v1", api)
            .route(
                "/upload/{upload_id}/{part_number}",
                put(uploads::put_part).layer(DefaultBodyLimit::disable()),
            )
            .merge(web::routes());
        playback = playback.route(PLAYBACK_ROUTES[0], get(origin::serve));
    }
    if routes.live {
        app = app
            .route(
                "/live/{stream_id}/watching",
                axum::routing::post(live_origin::watching).layer(DefaultBodyLimit::max(1024)),
            )
            .route("/time", get(live_origin::time));
        playback = playback
            .route(PLAYBACK_ROUTES[1], get(live_origin::stable))
            .route(PLAYBACK_ROUTES[2], get(live_origin::session_file));
    }
    let playback = playback
        .layer(playback_count::CountPlayback)
        .layer(cors.clone());
    app.layer(middleware::from_fn(count_requests))
        .layer(cors)
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs_f64(
            state.config.http.body_idle_timeout_s.max(0.1),
        )))
        // Server errors log themselves with their cause (error.rs, live.rs); a status alone,
        // often a viewer's 503 or 404, is no reason for an ERROR line.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(middleware::from_fn(error::request_id))
        .merge(playback)
        .with_state(state)
}

/// What an overflow connection gets (see [`serve`]): health and metrics, 503 for the rest.
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(|| async {
            ApiError::Unavailable {
                message: "the server is at its connection limit; retry shortly".into(),
                retry_after: Duration::from_secs(1),
            }
        })
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.config.api_token {
        let ok = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()));
        if !ok {
            let mut resp = ApiError::Unauthorized.into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return resp;
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn count_requests(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::counter!(
        "oxcast_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => resp.status().as_u16().to_string()
    )
    .increment(1);
    resp
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the database does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
        }
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}
