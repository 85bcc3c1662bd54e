//! The replica against the embedded engines (SQLite's in-process signal, a local object
//! folder): a stand-in encoder node publishes playlists the way [`crate::publish`] does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oxcast_base::{SessionId, StreamId, VideoId};
use oxcast_db::Db;
use oxcast_media::hls::{LivePlaylist, LiveSegment, Part};
use oxcast_store::{keys, Store};
use tokio_util::sync::CancellationToken;

use crate::publish::{self, MediaDoc, Signal, TOPIC};
use crate::{LiveError, LiveObject, Replica};

struct Setup {
    _dir: tempfile::TempDir,
    db: Db,
    store: Store,
    replica: Arc<Replica>,
    stream: StreamId,
    session: SessionId,
    video: VideoId,
    stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}/db.sqlite?mode=rwc",
        dir.path().display()
    ))
    .await
    .unwrap();
    let store = Store::local(&dir.path().join("objects")).unwrap();
    let stream = db.create_live_stream("show", "key", 1).await.unwrap();
    let row = db.start_live_session(&stream, "show", 2).await.unwrap();
    let config = oxcast_base::config::LiveConfig {
        segment_s: 2.0,
        part_s: 0.5,
        ..Default::default()
    };
    let stop = CancellationToken::new();
    let clock: oxcast_base::clock::SharedClock = Arc::new(oxcast_base::clock::SystemClock);
    let (replica, _task) = Replica::start(
        db.clone(),
        store.clone(),
        &config,
        clock,
        "test:1".into(),
        stop.clone(),
    );
    Setup {
        _dir: dir,
        db,
        store,
        replica,
        stream: stream.id,
        session: row.id,
        video: row.video_id,
        stop,
    }
}

/// Segment 0 complete, `parts` parts of segment 1.
fn playlist(parts: u64) -> LivePlaylist {
    LivePlaylist {
        target_duration: 2,
        part_target: 0.5,
        segments: vec![LiveSegment {
            number: 0,
            uri: "seg-0.m4s".into(),
            duration: 2.0,
            map_uri: Some("init-0.mp4".into()),
            ..Default::default()
        }],
        open_parts: (0..parts)
            .map(|i| Part {
                uri: format!("part-1-{i}.m4s"),
                duration: 0.5,
                independent: i == 0,
            })
            .collect(),
        preload_hint: Some(format!("part-1-{parts}.m4s")),
        ..Default::default()
    }
}

impl Setup {
    /// Stores the playlist, and signals it when `signal`.
    async fn publish(&self, version: u64, playlist: LivePlaylist, publishing: bool, signal: bool) {
        let doc = MediaDoc {
            version,
            publishing,
            playlist,
        };
        let key = publish::media_key(self.video, "360p").unwrap();
        self.store
            .put(&key, Bytes::from(serde_json::to_vec(&doc).unwrap()))
            .await
            .unwrap();
        if signal {
            let s = Signal::Media(self.session, "360p".into());
            self.db.notify(TOPIC, &s.payload()).await.unwrap();
        }
    }

    async fn media(&self, msn: Option<u64>, part: Option<u64>) -> Result<String, LiveError> {
        let body = self
            .replica
            .media_playlist(self.stream, self.session, "360p", msn, part, false)
            .await?;
        Ok(String::from_utf8(body.identity().to_vec()).unwrap())
    }
}

#[tokio::test]
async fn plain_and_blocking_reloads_follow_what_the_encoder_node_publishes() {
    let s = Arc::new(setup().await);
    s.publish(1, playlist(1), true, true).await;
    let text = s.media(None, None).await.unwrap();
    assert!(
        text.contains("part-1-0.m4s") && text.contains("seg-0.m4s"),
        "{text}"
    );

    // Held for part 1 of segment 1 until it is published and signalled.
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { (s.media(Some(1), Some(1)).await, Instant::now()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "answered before the part existed");
    let published = Instant::now();
    s.publish(2, playlist(2), true, true).await;
    let (text, at) = waiter.await.unwrap();
    assert!(text.unwrap().contains("part-1-1.m4s"));
    assert!(
        at - published < Duration::from_millis(500),
        "{:?}",
        at - published
    );
}

#[tokio::test]
async fn a_lost_signal_costs_a_poll_not_a_stuck_player() {
    let s = Arc::new(setup().await);
    s.publish(1, playlist(1), true, true).await;
    s.media(None, None).await.unwrap();
    let waiter = tokio::spawn({
        let s = s.clone();
        async move { s.media(Some(1), Some(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Stored, never signalled.
    s.publish(2, playlist(2), true, false).await;
    let text = tokio::time::timeout(Duration::from_secs(4), waiter)
        .await
        .expect("the waiter polls")
        .unwrap()
        .unwrap();
    assert!(text.contains("part-1-1.m4s"), "{text}");
}

#[tokio::test]
async fn no_publisher_or_an_ended_session_answers_at_once() {
    let s = setup().await;
    s.publish(1, playlist(1), false, true).await;
    let started = Instant::now();
    let text = s.media(Some(1), Some(3)).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(text.contains("part-1-0.m4s"), "{text}");
    let mut ended = playlist(0);
    ended.ended = true;
    s.publish(2, ended, false, true).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let text = s.media(Some(1), Some(3)).await.unwrap();
        if text.contains("#EXT-X-ENDLIST") {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_hinted_part_is_held_until_it_is_stored() {
    let s = Arc::new(setup().await);
    s.publish(1, playlist(1), true, true).await;
    let early = tokio::spawn({
        let s = s.clone();
        async move {
            s.replica
                .object(s.stream, s.session, "360p", "part-1-1.m4s")
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!early.is_finished());
    let key = keys::video_object(s.video, "360p/part-1-1.m4s").unwrap();
    s.store
        .put(&key, Bytes::from_static(b"moof"))
        .await
        .unwrap();
    s.publish(2, playlist(2), true, true).await;
    match early.await.unwrap().unwrap() {
        LiveObject::Whole(b) => assert_eq!(&b[..], b"moof"),
        LiveObject::Growing(_) => panic!("a stored part is whole"),
    }
    // Nothing is coming for a part far behind the edge that was never stored.
    let started = Instant::now();
    let r = s
        .replica
        .object(s.stream, s.session, "360p", "init-9.mp4")
        .await;
    assert!(matches!(r, Err(LiveError::NotFound(_))));
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_reason() {
    let s = setup().await;
    s.publish(1, playlist(1), true, true).await;
    let other = s.db.create_live_stream("other", "k2", 3).await.unwrap();
    let r = s
        .replica
        .media_playlist(other.id, s.session, "360p", None, None, false)
        .await;
    assert!(
        matches!(r, Err(LiveError::NotFound(_))),
        "session of another stream"
    );
    let r = s
        .replica
        .media_playlist(s.stream, SessionId::new(), "360p", None, None, false)
        .await;
    assert!(matches!(r, Err(LiveError::NotFound(_))), "unknown session");
    assert!(matches!(
        s.media(None, Some(1)).await,
        Err(LiveError::BadRequest(_))
    ));
    assert!(matches!(
        s.media(Some(99), None).await,
        Err(LiveError::BadRequest(_))
    ));
    let r = s
        .replica
        .media_playlist(s.stream, s.session, "1080p", None, None, false)
        .await;
    assert!(
        matches!(r, Err(LiveError::NotFound(_))),
        "no such rendition"
    );
    // The master: not before it is published, then as published.
    assert!(matches!(
        s.replica.master(s.stream).await,
        Err(LiveError::Starting)
    ));
    assert!(matches!(
        s.replica.master(other.id).await,
        Err(LiveError::NotLive)
    ));
}
