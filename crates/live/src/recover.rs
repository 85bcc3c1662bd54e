//! Crash recovery: sessions a crashed process left `live` are ended, and what they stored is
//! published as their recording. What can be published is decided in
//! [`oxcast_live_core::recovery`]; this reads the objects and the media times.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxcast_live_core::recovery::{self, SegmentTimes};
use oxcast_store::keys;
use tokio::sync::{mpsc, watch};

use crate::fence::Fence;
use crate::monitor::Monitor;
use crate::package::write_objects;
use crate::rendered::Rendered;
use crate::session::{LiveManager, Session};
use crate::state::{RestoredRendition, Segment, SessionState};

/// How often a live node looks for sessions other nodes left behind.
const SWEEP: Duration = Duration::from_secs(10);

impl LiveManager {
    /// Sessions a crashed process left `live` cannot continue, but what they stored is not
    /// lost: each is ended and its stored segments published as its recording.
    /// At startup: this node's earlier processes (`{node_id}:{pid}`) are gone, so their
    /// leases protect nothing.
    pub async fn recover_orphans(&self) -> oxcast_db::Result<()> {
        let own = match self.holder.rsplit_once(':') {
            Some((node, _)) => format!("{node}:"),
            None => self.holder.clone(),
        };
        self.recover(&own).await
    }

    /// Recovers, every [`SWEEP`], the sessions of live nodes that died and did not come back
    /// (their leases expired), so their recordings are not lost with the machine. Two nodes
    /// recovering one session at once publish the same recording twice, from the same objects.
    pub fn start_sweeper(self: &Arc<Self>) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let mut every = tokio::time::interval(SWEEP);
            every.tick().await;
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = me.shutdown.cancelled() => return,
                }
                if let Err(e) = me.recover("").await {
                    tracing::warn!(error = %e, "looking for interrupted live sessions failed");
                }
            }
        });
    }

    async fn recover(&self, own_prefix: &str) -> oxcast_db::Result<()> {
        let sessions = self
            .db
            .orphaned_live_sessions(own_prefix, self.clock.now_ms())
            .await?;
        for s in sessions {
            tracing::warn!(session = %s.id, video = %s.video_id, "recovering a live session whose node stopped");
            let now = self.clock.now_ms();
            match self.rebuild(&s).await {
                Some(session) => match self.publish_recording(&session).await {
                    Ok(p) => {
                        tracing::info!(
                            duration_s = p.duration_s,
                            "recording of the interrupted session published"
                        );
                        self.db.set_video_ready(s.video_id, &p, now).await?;
                    }
                    Err(why) => self.db.set_video_failed(s.video_id, &why, now).await?,
                },
                None => self
                    .db
                    .set_video_failed(
                        s.video_id,
                        "the server stopped during this live session before anything was recorded",
                        now,
                    )
                    .await?,
            }
            self.db.end_live_session(s.id, now).await?;
        }
        Ok(())
    }

    /// Reads an orphaned session's stored inits and segments back into an ended session.
    async fn rebuild(&self, s: &oxcast_db::LiveSession) -> Option<Arc<Session>> {
        let video = s.video_id;
        let prefix = keys::video_prefix(video);
        let objects = self.store.list(&prefix).await.ok()?;
        let base = format!("{prefix}/");
        let names = objects.iter().filter_map(|o| o.key.strip_prefix(&base));
        let mut restored = Vec::new();
        for (name, files) in recovery::group(names) {
            let init_key = keys::video_object(video, &files.inits[0].1).ok()?;
            let init = self.store.get_bytes(&init_key).await.ok()?;
            let mut read = Vec::new();
            for (number, file) in &files.segments {
                let key = keys::video_object(video, file).ok()?;
                let data = self.store.get_bytes(&key).await.ok()?;
                // A segment cut short by the crash is left out.
                let Ok((track, _, frags)) =
                    oxcast_media::mp4::split_file(&[&init[..], &data[..]].concat())
                else {
                    continue;
                };
                let (Some(first), Some(last)) = (frags.first(), frags.last()) else {
                    continue;
                };
                let times = SegmentTimes {
                    start: first.base_media_decode_time,
                    end: last.base_media_decode_time + last.duration,
                    timescale: track.timescale.max(1),
                };
                read.push((*number, times, track, data.len() as u64));
            }
            let marks = recovery::epochs(&read.iter().map(|r| r.1).collect::<Vec<_>>());
            let track = read.last().map(|r| r.2.clone());
            let segments = read
                .into_iter()
                .zip(marks)
                .map(|((number, t, _, bytes), (epoch, discontinuity))| {
                    let ticks = t.end.saturating_sub(t.start);
                    Segment {
                        number,
                        epoch,
                        start_ticks: t.start,
                        ticks,
                        duration_s: ticks as f64 / f64::from(t.timescale),
                        parts: Vec::new(),
                        discontinuity,
                        pdt_ms: s.started_at,
                        bytes,
                    }
                })
                .collect();
            if let Some(track) = track {
                restored.push(RestoredRendition {
                    name,
                    track,
                    segments,
                });
            }
        }
        if restored.is_empty() {
            return None;
        }
        let (writer, rx) = mpsc::channel(1);
        self.tasks.spawn(write_objects(
            self.store.clone(),
            self.db.clone(),
            rx,
            Fence::open(),
        ));
        Some(Arc::new(Session {
            state: Mutex::new(SessionState::restore(
                s.stream_id,
                s.id,
                s.video_id,
                s.started_at,
                self.config.live.segment_s,
                self.config.live.part_s,
                restored,
            )),
            monitor: Mutex::new(Monitor::new()),
            changed: watch::channel(0).0,
            grown: watch::channel(0).0,
            rendered: Rendered::default(),
            writer,
            title: String::new(),
            fence: Fence::open(),
            adopted: false.into(),
        }))
    }
}
