//! The HTTP server loop: hyper connections under limits that idle, slow and stalled clients
//! cannot get around.
//!
//! - A request's headers must arrive within `header_timeout` of the server being ready for
//!   them (hyper's header timer), which closes both slowloris clients and kept-alive
//!   connections left idle that long.
//! - Request bodies that stop arriving are cut by the router's body idle timeout.
//! - At most `max_connections` are served at once. Beyond that a few more (`overflow`) are
//!   served only `/healthz` and `/metrics` with a one-second header timeout and no keep-alive,
//!   so an operator's probe gets through while the server is full; beyond those, connections are
//!   accepted and closed at once. The loop never stops accepting, and a full descriptor table
//!   (EMFILE) makes it back off briefly instead of spinning on the error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use oxcast_base::ratelog::{LogLimiter, Verdict};
use tokio::net::TcpListener;

use crate::origin::fast::FastPlayback;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits; see the module docs.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub overflow: usize,
}

/// Connections open now, for metrics and tests.
#[derive(Debug, Default)]
struct Counts {
    full: AtomicUsize,
    overflow: AtomicUsize,
}

struct Slot {
    counts: Arc<Counts>,
    overflow: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let c = if self.overflow {
            &self.counts.overflow
        } else {
            &self.counts.full
        };
        c.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("oxcast_http_connections", "kind" => if self.overflow { "overflow" } else { "full" })
            .decrement(1.0);
    }
}

/// Serves `app` on `listener` until `shutdown`; `health` answers on overflow connections. Open
/// connections then get a few seconds to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    fast: Option<FastPlayback>,
    health: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let counts = Arc::new(Counts::default());
    let graceful = GracefulShutdown::new();
    // HTTP/1 only, with hyper's own HTTP/1 connection rather than hyper-util's auto one: the
    // auto builder's h1/h2 sniffing waits for a first byte with no timeout, so a client that
    // connects and sends nothing would never meet the header timer, and its connection state
    // has room for HTTP/2 in every one of thousands of held connections. Players and CDNs speak
    // HTTP/1.1 to an origin without TLS.
    let mut full = http1::Builder::new();
    // A 64 KiB read buffer (hyper grows it to ~400 KiB by default) bounds what each of
    // thousands of connections holds, with no measurable cost to upload speed.
    full.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let mut restricted = http1::Builder::new();
    restricted
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(1))
        .keep_alive(false);
    // Accept failures have no source worth telling apart: one line, then a count per interval.
    let mut accept_errors = LogLimiter::new(Duration::from_secs(10), 1);
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (or a connection reset before accept): wait a little
                    // for some to free up rather than spin; say so once per interval.
                    let now = std::time::Instant::now();
                    for s in accept_errors.due(now) {
                        tracing::warn!(count = s.suppressed, "{} more failures to accept connections", s.suppressed);
                    }
                    if accept_errors.hit((), now) == Verdict::Log {
                        tracing::warn!(error = %e, "accepting connections fails; backing off (more failures are counted)");
                    }
                    metrics::counter!("oxcast_http_accept_errors_total").increment(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let overflow = if counts.full.load(Ordering::Relaxed) < limits.max_connections {
            false
        } else if counts.overflow.load(Ordering::Relaxed) < limits.overflow {
            true
        } else {
            metrics::counter!("oxcast_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let slot = Slot {
            counts: counts.clone(),
            overflow,
        };
        if overflow {
            counts.overflow.fetch_add(1, Ordering::Relaxed);
        } else {
            counts.full.fetch_add(1, Ordering::Relaxed);
        }
        metrics::gauge!("oxcast_http_connections", "kind" => if overflow { "overflow" } else { "full" })
            .increment(1.0);
        let _ = stream.set_nodelay(true);
        let router = if overflow {
            health.clone()
        } else {
            app.clone()
        };
        // VOD playback is answered ahead of the router (`origin::fast`), on full connections.
        let fast = fast.clone().filter(|_| !overflow);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let (router, fast) = (router.clone(), fast.clone());
            async move {
                if let Some(f) = fast.filter(|_| FastPlayback::takes(&req)) {
                    return Ok::<_, Infallible>(f.serve(req).await);
                }
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(addr));
                router.oneshot(req).await
            }
        });
        let builder = if overflow { &restricted } else { &full };
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %addr, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {
            tracing::info!("connections still open after 5 s; closing them");
        }
    }
    Ok(())
}
