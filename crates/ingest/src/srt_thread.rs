//! The thread the SRT protocol stack runs on.
//!
//! `srt-tokio` parses every datagram of the shared UDP socket in one listener task, and
//! `srt-protocol` logs each one it cannot parse at WARN through the `log` facade, without the
//! sender's address (100k garbage datagrams were 11 MB of log in 10 s). Its other messages are
//! per packet too, and some quote handshake packets whole, stream id (the key) included: a
//! repeated handshake on an open connection is a WARN with the packet. We cannot change what it
//! logs, but we can choose where it runs: on a thread of its own, whose tracing dispatcher
//! ([`QuietSrt`]) drops the SRT stack's messages below ERROR and forwards everything else. Our
//! own lines (`srt.rs`) cover each connection's life; the listener's count of datagrams it could
//! not parse becomes one summary per interval. A flood's parsing cost also stays on this
//! thread, off the runtime that serves HTTP.
//!
//! Everything `srt-tokio` spawns (the listener task, one task per connection) runs here; the
//! values it hands out (requests, sockets) are channels and work from any runtime.

use std::future::Future;

use tokio::sync::oneshot;
use tracing::{
    level_filters::LevelFilter,
    span::{Attributes, Id, Record},
    subscriber::Interest,
    Dispatch, Event, Level, Metadata, Subscriber,
};

/// `log` targets of the SRT stack: per-packet messages, some quoting stream ids.
const SRT_STACK_TARGETS: &[&str] = &["srt_protocol", "srt_tokio"];

/// A current-thread runtime on a named thread; stops when dropped (or [`SrtThread::stop`]).
pub(crate) struct SrtThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SrtThread {
    /// Starts the thread; its dispatcher forwards to the caller's current one.
    pub(crate) fn start() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let quiet = Dispatch::new(QuietSrt::new(tracing::dispatcher::get_default(
            Dispatch::clone,
        )));
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("srt-ingest".into())
            .spawn(move || {
                let _quiet = tracing::dispatcher::set_default(&quiet);
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Drops what is left of srt-tokio's tasks, still under the quiet dispatcher.
                drop(rt);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the SRT thread (so that what it spawns lives there) and waits for it.
    pub(crate) async fn run<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.handle.spawn(fut).await {
            Ok(v) => v,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => panic!("the SRT thread stopped while a call was running"),
        }
    }

    /// Stops the runtime (dropping any task still on it) and waits for the thread.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for SrtThread {
    fn drop(&mut self) {
        // Not joined here (that would block a runtime thread); the thread ends on its own.
        let _ = self.stop.take().map(|s| s.send(()));
    }
}

/// Forwards to `inner`, except the SRT stack's messages below ERROR.
struct QuietSrt {
    inner: Dispatch,
    /// `Dispatch` does not expose its subscriber's hint; the level in force at start is.
    max_level: LevelFilter,
}

impl QuietSrt {
    fn new(inner: Dispatch) -> Self {
        Self {
            inner,
            max_level: LevelFilter::current(),
        }
    }

    fn dropped(meta: &Metadata<'_>) -> bool {
        *meta.level() != Level::ERROR
            && SRT_STACK_TARGETS
                .iter()
                .any(|t| meta.target().starts_with(t))
    }
}

impl Subscriber for QuietSrt {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::dropped(meta) {
            Interest::never()
        } else {
            self.inner.register_callsite(meta)
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max_level)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        !Self::dropped(meta) && self.inner.enabled(meta)
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        self.inner.new_span(span)
    }

    fn record(&self, span: &Id, values: &Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &Id, follows: &Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn event(&self, event: &Event<'_>) {
        self.inner.event(event)
    }

    fn enter(&self, span: &Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &Id) -> Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: Id) -> bool {
        self.inner.try_close(id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the targets of the events it receives.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Subscriber for Seen {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, e: &Event<'_>) {
            let m = e.metadata();
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", m.level(), m.target()));
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn drops_the_srt_stacks_lines_below_error_only() {
        let seen = Seen::default();
        let inner = Dispatch::new(seen.clone());
        let quiet = Dispatch::new(QuietSrt::new(inner));
        tracing::dispatcher::with_default(&quiet, || {
            tracing::warn!(target: "srt_protocol::listener", "packet - Parse(...)");
            tracing::info!(target: "srt_protocol::packet::control", "odd flags");
            tracing::debug!(target: "srt_tokio::listener::state", "input - Handshake(sid=KEY)");
            tracing::warn!(target: "srt_protocol::connection", "handshake - Handshake(KEY)");
            tracing::error!(target: "srt_tokio::socket::factory", "kept: errors");
            tracing::warn!(target: "oxcast_ingest::srt", "kept: ours");
            tracing::debug!(target: "srtish", "kept: not the SRT stack");
        });
        assert_eq!(
            *seen.0.lock().unwrap(),
            [
                "ERROR srt_tokio::socket::factory",
                "WARN oxcast_ingest::srt",
                "DEBUG srtish"
            ]
        );
    }

    #[tokio::test]
    async fn runs_futures_on_its_own_thread_and_stops() {
        let t = SrtThread::start().unwrap();
        let name = t
            .run(async { std::thread::current().name().map(str::to_string) })
            .await;
        assert_eq!(name.as_deref(), Some("srt-ingest"));
        // Tasks spawned from there live there.
        let inner = t
            .run(async {
                let task =
                    tokio::spawn(async { std::thread::current().name().map(str::to_string) });
                task.await.unwrap()
            })
            .await;
        assert_eq!(inner.as_deref(), Some("srt-ingest"));
        t.stop().await;
    }
}
