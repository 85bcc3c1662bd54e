//! Encoder failover, the new encoder's side: taking over a session that another encoder was
//! running when the ingest lost it, so that viewers keep their URLs and the session, its DVR
//! window and its recording go on after a discontinuity.
//!
//! The ingest's relay connects with a [`Takeover`] naming the lost encoder. The stream's lease
//! moves here (at once when the old encoder's connection closed, since it is dead; otherwise
//! once it can no longer be writing, see [`crate::fence`]), and the session that the database
//! says is live is adopted: it waits in its slot, as in a reconnect grace period, for the
//! relayed publisher, which then resumes it. Its first epoch here starts from the index of the
//! segments the old encoder stored ([`oxcast_db::SegmentRow`]) and completes the segment it
//! left open from the parts it had published, so nothing that was listed is lost and no file
//! name is used twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use oxcast_db::LiveStream;
use oxcast_ingest::relay::Takeover;
use oxcast_live_core::slot::Event;
use oxcast_live_core::state::{Segment, SessionState};
use oxcast_media::ladder::Rung;
use oxcast_media::mp4::{split_file, Fragment};
use oxcast_store::keys;

use crate::fence::TAKEOVER_AFTER_MS;
use crate::package::queue_added;
use crate::publish::{self, MediaDoc};
use crate::session::{LiveManager, Session};
use crate::slots::LEASE_TTL_MS;

impl LiveManager {
    /// Takes the stream's lease from the encoder the ingest lost. `Ok(Err(reason))`: not yet
    /// (it may still be writing) or someone else holds it; the relay tries again.
    pub(crate) async fn take_over_lease(
        &self,
        stream: &LiveStream,
        from: &Takeover,
    ) -> oxcast_db::Result<Result<oxcast_db::StreamLease, String>> {
        let now = self.clock.now_ms();
        let r = self
            .db
            .take_over_stream_lease(
                stream.id,
                &self.holder,
                &from.holder,
                from.gone,
                TAKEOVER_AFTER_MS,
                LEASE_TTL_MS,
                now,
            )
            .await?;
        Ok(r.map_err(|other| {
            if other == from.holder {
                "the stream's previous encoder may still be writing; try again shortly".into()
            } else {
                "this stream is already live on another server of this site".into()
            }
        }))
    }

    /// Adopts the stream's live session, if it has one that this node does not run: it waits
    /// for its publisher here from now on. Call with the stream's lease held.
    pub(crate) async fn adopt(self: &Arc<Self>, stream: &LiveStream) -> Result<(), String> {
        if self.runs(stream.id) {
            return Ok(());
        }
        let row = match self.db.current_live_session(stream.id).await {
            Ok(Some(row)) => row,
            // Nothing went live before: the publisher starts a new session.
            Ok(None) => return Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "looking up the session to take over failed");
                return Err("internal error".into());
            }
        };
        let state = SessionState::new(
            stream.id,
            row.id,
            row.video_id,
            row.started_at,
            self.config.live.segment_s,
            self.config.live.part_s,
        );
        let session = self.new_session(state, stream.title.clone(), true);
        let actions = self.step(
            stream.id,
            Event::Adopt {
                session: row.id,
                now: self.clock.now_ms(),
            },
        );
        if actions.is_empty() {
            // The slot is busy here (a publisher is being probed): leave it be.
            session.fence.lose();
            return Ok(());
        }
        if let Some(slot) = self.slots.lock().expect("slots").get_mut(&stream.id) {
            slot.session = Some(session.clone());
        }
        metrics::gauge!("oxcast_live_sessions_active").increment(1.0);
        metrics::counter!("oxcast_live_takeovers_total").increment(1);
        tracing::info!(session = %row.id, video = %row.video_id, "took over a live session from a lost encoder");
        self.tasks
            .spawn(self.clone().run_monitor(session.clone(), stream.id));
        self.act(stream.id, actions).await;
        Ok(())
    }

    /// The first epoch of an adopted session: its renditions (the same source gives the same
    /// ladder), the stored segments, and the segment the lost encoder left open. `true` when
    /// the session was adopted (once).
    pub(crate) async fn continue_adopted(
        &self,
        session: &Arc<Session>,
        rungs: &[Rung],
        audio: bool,
    ) -> Result<bool, String> {
        // Cleared only once done: a failed try leaves the next epoch to try again.
        if !session.adopted.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let id = session.state.lock().expect("state").session_id;
        // Numbering on from anything but the index would reuse names players have seen.
        let rows = self.db.live_segments(id).await.map_err(|e| {
            tracing::error!(error = %e, "reading the taken-over session's segments failed");
            "the session's stored segments could not be read".to_string()
        })?;
        let stored: Vec<(String, Segment)> = rows
            .into_iter()
            .map(|r| {
                (
                    r.rendition,
                    Segment {
                        number: r.number,
                        epoch: r.epoch,
                        start_ticks: r.start_ticks,
                        ticks: r.ticks,
                        duration_s: r.duration_s,
                        parts: Vec::new(),
                        discontinuity: r.discontinuity,
                        pdt_ms: r.pdt_ms,
                        bytes: r.bytes,
                    },
                )
            })
            .collect();
        let names: Vec<String> = {
            let mut st = session.state.lock().expect("state");
            st.set_renditions(rungs, audio);
            st.continue_from(stored);
            st.renditions.iter().map(|r| r.name.clone()).collect()
        };
        for name in names {
            if let Err(why) = self.complete_open(session, &name).await {
                tracing::warn!(rendition = %name, %why, "the lost encoder's last segment could not be completed");
            }
        }
        session.adopted.store(false, Ordering::SeqCst);
        Ok(true)
    }

    /// The segment of `rendition` that the lost encoder had listed parts of but not finished,
    /// stored as a (short) segment of its own.
    async fn complete_open(&self, session: &Arc<Session>, rendition: &str) -> Result<(), String> {
        let (video, next, last_epoch, seg_s, part_target) = {
            let mut st = session.state.lock().expect("state");
            let (seg_s, part_target, video) = (st.segment_s, st.part_target(), st.video_id);
            let r = st.rendition(rendition).ok_or("no such rendition")?;
            (video, r.next_number(), r.epoch(), seg_s, part_target)
        };
        let key = publish::media_key(video, rendition).ok_or("bad rendition name")?;
        let doc = match self.store.get_bytes(&key).await {
            Ok(b) => serde_json::from_slice::<MediaDoc>(&b).map_err(|e| e.to_string())?,
            Err(oxcast_store::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        let pl = doc.playlist;
        if pl.ended || pl.open_parts.is_empty() || pl.next_number() != next {
            return Ok(());
        }
        let epoch = match &pl.open_map_uri {
            Some(uri) => uri
                .strip_prefix("init-")
                .and_then(|r| r.strip_suffix(".mp4"))
                .and_then(|e| e.parse::<u32>().ok())
                .ok_or_else(|| format!("unexpected init name {uri}"))?,
            None => last_epoch,
        };
        let get = |file: String| {
            let store = self.store.clone();
            async move {
                let k = keys::video_object(video, &format!("{rendition}/{file}"))
                    .map_err(|e| e.to_string())?;
                store
                    .get_bytes(&k)
                    .await
                    .map_err(|e| format!("{file}: {e}"))
            }
        };
        let init = get(format!("init-{epoch}.mp4")).await?;
        let mut whole = init.to_vec();
        for p in &pl.open_parts {
            whole.extend_from_slice(&get(p.uri.clone()).await?);
        }
        let (track, init_range, frags) = split_file(&whole).map_err(|e| e.to_string())?;
        let chunks: Vec<(Fragment, Bytes)> = frags
            .into_iter()
            .map(|f| {
                let data = Bytes::copy_from_slice(&whole[f.range.clone()]);
                (f, data)
            })
            .collect();
        let first_ms = chunks.first().map_or(0, |(f, _)| {
            (f.base_media_decode_time as f64 * 1000.0 / f64::from(track.timescale.max(1))) as i64
        });
        let completed = {
            let mut st = session.state.lock().expect("state");
            st.ensure_epochs(epoch + 1);
            // An epoch with no stored segment starts where this segment's clock says.
            let pdt = pl
                .open_program_date_time
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64 - first_ms);
            if epoch > last_epoch || next == 1 {
                if let Some(w) = pdt {
                    st.epochs[epoch as usize].wall_start_ms = w;
                }
            }
            let wall = st.epochs[epoch as usize].wall_start_ms;
            let r = st.rendition(rendition).ok_or("no such rendition")?;
            r.complete_open(
                epoch,
                track,
                Bytes::copy_from_slice(&whole[init_range]),
                &chunks,
                seg_s,
                part_target,
                wall,
            )
        };
        for c in &completed {
            tracing::info!(%rendition, segment = c.segment.number, duration_s = c.segment.duration_s, "completed the lost encoder's last segment from its parts");
        }
        queue_added(
            session,
            rendition,
            oxcast_live_core::state::Added {
                parts: Vec::new(),
                segments: completed,
            },
            false,
        )
        .await;
        Ok(())
    }

    /// At shutdown, where ingest nodes relay publishers here: every session is left live and
    /// no longer written here, for the encoder its ingest moves the stream to once this node's
    /// relay connections close (call this before closing them). Its lease is kept: a takeover
    /// from a closed connection needs no wait, and a released lease could let another node's
    /// sweeper end the session meanwhile.
    pub async fn hand_off(self: &Arc<Self>) {
        if !self.takes_relayed() {
            return;
        }
        let live: Vec<(oxcast_base::StreamId, oxcast_base::SessionId)> = self
            .slots
            .lock()
            .expect("slots")
            .iter()
            // A session waiting for its publisher has nobody to move: it ends here as usual.
            .filter(|(_, slot)| slot.core.has_publisher())
            .filter_map(|(stream, slot)| {
                let s = slot.session.as_ref()?;
                let st = s.state.lock().expect("state");
                (!st.ended && s.fence.is_fenced()).then_some((*stream, st.session_id))
            })
            .collect();
        for (stream, session) in live {
            // Only the abandoning: disconnecting the publisher would end its relayed stream,
            // which its ingest would take as the end of the stream.
            for a in self.step(stream, Event::Lost) {
                if let oxcast_live_core::slot::Action::Abandon { session } = a {
                    self.abandon(stream, session);
                }
            }
            metrics::counter!("oxcast_live_handoffs_total").increment(1);
            tracing::info!(%stream, %session, "session handed off: this encoder is stopping");
        }
    }
}
