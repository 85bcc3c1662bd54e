//! The driver around the pure slot machine, on the embedded engines (SQLite, a local folder)
//! with the injected clock: reconnects decided by the clock's time, a lease lost to another
//! encoder, and a session handed off at shutdown.

use std::sync::Arc;
use std::time::Duration;

use oxcast_base::clock::{Clock, ManualClock, SharedClock};
use oxcast_base::Config;
use oxcast_db::{Db, LiveStream};
use oxcast_live_core::slot::Event;
use oxcast_live_core::state::SessionState;
use oxcast_store::Store;
use tokio_util::sync::CancellationToken;

use crate::session::{LiveManager, Session};
use crate::slots::LEASE_TTL_MS;

struct Setup {
    _dir: tempfile::TempDir,
    m: Arc<LiveManager>,
    clock: ManualClock,
    db: Db,
    stream: LiveStream,
}

async fn setup(relayed: bool) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}/db.sqlite?mode=rwc",
        dir.path().display()
    ))
    .await
    .unwrap();
    let store = Store::local(&dir.path().join("objects")).unwrap();
    let mut config = Config::default();
    config.live.grace_s = 10.0;
    if relayed {
        config.live.relay_listen = Some("127.0.0.1:1".parse().unwrap());
    }
    let clock = ManualClock::new(1_000_000);
    let shared: SharedClock = Arc::new(clock.clone());
    let m = LiveManager::new(
        db.clone(),
        store,
        Arc::new(config),
        shared,
        dir.path().join("scratch"),
        CancellationToken::new(),
        "enc-a:1".into(),
    );
    let stream = db.create_live_stream("show", "key", 1).await.unwrap();
    Setup {
        _dir: dir,
        m,
        clock,
        db,
        stream,
    }
}

impl Setup {
    /// A publisher connected, probed and live in a new session (what `run_epoch` does before
    /// encoding); returns the session and the publisher's generation.
    async fn live(&self) -> (Arc<Session>, u64) {
        let lease = self
            .db
            .take_stream_lease(self.stream.id, "enc-a:1", LEASE_TTL_MS, self.clock.now_ms())
            .await
            .unwrap()
            .unwrap();
        let place = self.m.reserve(self.stream.id, "key").unwrap();
        assert!(place.resumed.is_none());
        self.m.hold_lease(self.stream.id, lease.epoch);
        self.m.step(
            self.stream.id,
            Event::Probed {
                generation: place.generation,
            },
        );
        let row = self
            .db
            .start_live_session(&self.stream, "show", self.clock.now_ms())
            .await
            .unwrap();
        let s = self.m.new_session(
            SessionState::new(self.stream.id, row.id, row.video_id, 0, 2.0, 0.5),
            "show".into(),
            false,
        );
        self.m
            .slots
            .lock()
            .unwrap()
            .get_mut(&self.stream.id)
            .unwrap()
            .session = Some(s.clone());
        self.m.step(
            self.stream.id,
            Event::Opened {
                generation: place.generation,
                session: row.id,
            },
        );
        (s, place.generation)
    }
}

#[tokio::test]
async fn a_reconnect_is_decided_by_the_injected_clock_not_by_the_timer() {
    let t = setup(false).await;
    let (session, generation) = t.live().await;
    // The publisher leaves; its grace timer is not run here, only the clock moves.
    t.m.step(
        t.stream.id,
        Event::Gone {
            generation,
            now: t.clock.now_ms(),
        },
    );
    t.clock.advance(10_000 - 1);
    let back = t.m.reserve(t.stream.id, "key").unwrap();
    assert!(
        back.resumed
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &session)),
        "at the last millisecond of grace the session resumes"
    );
    t.m.step(
        t.stream.id,
        Event::Gone {
            generation: back.generation,
            now: t.clock.now_ms(),
        },
    );
    t.clock.advance(10_000 + 1);
    let late = t.m.reserve(t.stream.id, "key").unwrap();
    assert!(late.resumed.is_none(), "one past it starts anew");
    assert!(late.generation > back.generation);
}

#[tokio::test]
async fn a_fenced_session_whose_lease_is_taken_over_stops_writing_and_is_dropped() {
    let t = setup(true).await;
    let (session, _) = t.live().await;
    assert!(session.fence.is_fenced());
    // Writable once its keeper has renewed the lease.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), session.fence.ready())
            .await
            .unwrap()
    );
    // Another encoder takes the stream over (the ingest found this one's connection closed).
    t.db.take_over_stream_lease(
        t.stream.id,
        "enc-b:2",
        "enc-a:1",
        true,
        2_000,
        LEASE_TTL_MS,
        t.clock.now_ms(),
    )
    .await
    .unwrap()
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !session.fence.is_lost() {
        assert!(tokio::time::Instant::now() < deadline, "never fenced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!session.fence.ready().await);
    assert!(t.m.session(t.stream.id).is_none(), "dropped, not finished");
    assert!(!session.state.lock().unwrap().ended);
}

#[tokio::test]
async fn a_handed_off_session_is_dropped_here_and_its_lease_kept() {
    let t = setup(true).await;
    let (session, _) = t.live().await;
    t.m.hand_off().await;
    assert!(session.fence.is_lost());
    assert!(t.m.session(t.stream.id).is_none());
    assert!(!session.state.lock().unwrap().ended);
    assert_eq!(
        t.db.stream_lease_holder(t.stream.id, t.clock.now_ms())
            .await
            .unwrap()
            .as_deref(),
        Some("enc-a:1"),
        "kept for the takeover"
    );
    // Nothing is handed off twice, and an unrelayed node hands nothing off.
    t.m.hand_off().await;
    let u = setup(false).await;
    let (s, _) = u.live().await;
    u.m.hand_off().await;
    assert!(!s.fence.is_lost());
    assert!(u.m.session(u.stream.id).is_some());
    // A session waiting for its publisher has nothing to move: it stays, to be finished here.
    let w = setup(true).await;
    let (s, generation) = w.live().await;
    w.m.step(
        w.stream.id,
        Event::Gone {
            generation,
            now: w.clock.now_ms(),
        },
    );
    w.m.hand_off().await;
    assert!(!s.fence.is_lost());
    assert!(w.m.session(w.stream.id).is_some());
}
