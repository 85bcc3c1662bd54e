//! The driver of each stream's publisher place: it feeds the pure state machine
//! ([`oxcast_live_core::slot`]) the events this node sees, with the injected clock's time, and
//! carries out what it answers: disconnecting a publisher, arming the grace timer, finishing a
//! session. The rules (who may publish, reconnects within grace, a deleted stream) are all
//! there, tested without I/O; this file only does them.

use std::sync::{Arc, Weak};
use std::time::Duration;

use oxcast_base::{SessionId, StreamId};
use oxcast_ingest::Refusal;
use oxcast_live_core::slot::{self, Action, Event, Timing};
use tokio_util::sync::CancellationToken;

use crate::fence::{self, Fence};
use crate::session::{LiveManager, RefusedPublish, Session};

/// How long a stream lease lasts unless renewed (every [`crate::monitor`] stream check, 3 s):
/// how long a crashed or frozen node keeps its streams from starting elsewhere.
pub(crate) const LEASE_TTL_MS: i64 = 10_000;

/// How long ending a deleted stream waits for its encoder to drain what the publisher sent.
pub(crate) const DRAIN: Duration = Duration::from_secs(15);

pub(crate) struct Slot {
    pub(crate) core: slot::Slot,
    /// The stream's latest session: live, waiting for its publisher, or ended.
    pub(crate) session: Option<Arc<Session>>,
    /// Cancelled to disconnect the current publisher (a new token per publisher).
    pub(crate) kick: CancellationToken,
    /// The epoch of the stream lease this node holds for it.
    pub(crate) lease: Option<i64>,
}

/// A publisher's place in its stream's slot.
pub(crate) struct Reserved {
    pub(crate) generation: u64,
    /// The session a reconnecting publisher resumes.
    pub(crate) resumed: Option<Arc<Session>>,
    pub(crate) kick: CancellationToken,
}

impl LiveManager {
    fn timing(&self) -> Timing {
        Timing {
            grace_ms: (self.config.live.grace_s.max(0.0) * 1000.0) as i64,
            drain_ms: DRAIN.as_millis() as i64,
        }
    }

    /// Applies `event` to the stream's slot (made if missing); returns what to do.
    pub(crate) fn step(&self, stream: StreamId, event: Event<'_>) -> Vec<Action> {
        let timing = self.timing();
        let mut slots = self.slots.lock().expect("slots");
        let slot = slots.entry(stream).or_insert_with(|| Slot {
            core: slot::Slot::new(timing),
            session: None,
            kick: CancellationToken::new(),
            lease: None,
        });
        let actions = slot.core.handle(event);
        for a in &actions {
            if let Action::Probe { .. } = a {
                slot.kick = CancellationToken::new();
            }
        }
        actions
    }

    /// Carries out what the slot answered, except what the caller handles itself (probing,
    /// opening and encoding belong to the publisher's own task).
    pub(crate) async fn act(self: &Arc<Self>, stream: StreamId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Disconnect { generation } => {
                    let slots = self.slots.lock().expect("slots");
                    if let Some(slot) = slots.get(&stream) {
                        if matches!(slot.core.phase(), slot::Phase::Connected { generation: g, .. } if *g == generation)
                        {
                            slot.kick.cancel();
                        }
                    }
                }
                Action::WakeAt(at) => self.wake_at(stream, at),
                Action::Finish { session } => self.finish_session(stream, session).await,
                Action::Forget => {
                    self.slots.lock().expect("slots").remove(&stream);
                }
                Action::Abandon { session } => self.abandon(stream, session),
                Action::Refuse(_)
                | Action::Probe { .. }
                | Action::Open { .. }
                | Action::Encode { .. } => {}
            }
        }
    }

    /// The grace (or drain) timer: a tick at `at`, by the injected clock.
    fn wake_at(self: &Arc<Self>, stream: StreamId, at: i64) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let wait = (at - me.clock.now_ms()).max(0) as u64;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                _ = me.shutdown.cancelled() => return,
            }
            let actions = me.step(
                stream,
                Event::Tick {
                    now: me.clock.now_ms().max(at),
                },
            );
            me.act(stream, actions).await;
        });
    }

    /// Ends `session` and publishes its recording; tells the slot when done.
    async fn finish_session(self: &Arc<Self>, stream: StreamId, id: SessionId) {
        let session = self
            .slots
            .lock()
            .expect("slots")
            .get(&stream)
            .and_then(|s| s.session.clone())
            .filter(|s| s.state.lock().expect("state").session_id == id);
        match session {
            Some(s) => self.finish(&s).await,
            None => {
                tracing::warn!(%stream, session = %id, "asked to finish a session this node does not hold")
            }
        }
        let after = self.step(stream, Event::Finished { session: id });
        if after.contains(&Action::Forget) {
            self.slots.lock().expect("slots").remove(&stream);
        }
    }

    /// Takes the stream's publisher place; returns its generation and the session a
    /// reconnecting publisher resumes, if any. A session whose grace period ran out (its timer
    /// not yet fired) is finished meanwhile.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        stream: StreamId,
        key: &str,
    ) -> Result<Reserved, Refusal> {
        let now = self.clock.now_ms();
        let actions = self.step(stream, Event::Connect { key, now });
        let mut reserved = None;
        let mut rest = Vec::new();
        for a in actions {
            match a {
                Action::Refuse(why) => return Err(Refusal(why)),
                Action::Probe { generation, resume } => {
                    let slots = self.slots.lock().expect("slots");
                    let slot = slots.get(&stream).expect("made by step");
                    let resumed = resume.and_then(|id| {
                        slot.session
                            .clone()
                            .filter(|s| s.state.lock().expect("state").session_id == id)
                    });
                    reserved = Some(Reserved {
                        generation,
                        resumed,
                        kick: slot.kick.clone(),
                    });
                }
                other => rest.push(other),
            }
        }
        if !rest.is_empty() {
            let me = self.clone();
            self.tasks.spawn(async move { me.act(stream, rest).await });
        }
        reserved.ok_or_else(|| Refusal("internal error".into()))
    }

    /// The last publisher refused after probing, unless one was accepted since.
    pub fn last_refused(&self, stream: StreamId) -> Option<RefusedPublish> {
        let slots = self.slots.lock().expect("slots");
        let r = slots.get(&stream)?.core.refused()?;
        Some(RefusedPublish {
            reason: r.reason.clone(),
            at_ms: r.at_ms,
        })
    }

    pub(crate) fn hold_lease(&self, stream: StreamId, epoch: i64) {
        if let Some(slot) = self.slots.lock().expect("slots").get_mut(&stream) {
            slot.lease = Some(epoch);
        }
    }

    /// Renews the stream's lease; a node that lost it (it was frozen past the lease, and
    /// another node took the stream) disconnects its publisher, whose session then ends.
    /// A database that does not answer is no reason to stop: nobody else can take it then.
    pub(crate) async fn renew_lease(self: &Arc<Self>, stream: StreamId) {
        let Some(epoch) = self
            .slots
            .lock()
            .expect("slots")
            .get(&stream)
            .and_then(|s| s.lease)
        else {
            return;
        };
        let now = self.clock.now_ms();
        match self
            .db
            .renew_stream_lease(stream, &self.holder, epoch, LEASE_TTL_MS, now)
            .await
        {
            Ok(true) | Err(_) => {}
            Ok(false) => self.lose_stream(stream).await,
        }
    }

    /// Renews a fenced session's lease every [`fence::RENEW_EVERY`], moving its fence on with
    /// each success, until the session ends or is dropped, or its lease is lost.
    pub(crate) async fn keep_lease(self: Arc<Self>, stream: StreamId, session: Weak<Session>) {
        let mut every = tokio::time::interval(fence::RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // Not stopped by the shutdown token: the session is still written until it is handed
        // off or finished, which stops this.
        loop {
            every.tick().await;
            let Some(s) = session.upgrade() else { return };
            let fence: Fence = s.fence.clone();
            if fence.is_lost() || s.state.lock().expect("state").ended {
                return;
            }
            // The lease this session runs under, once it has its place in the slot.
            let held = self
                .slots
                .lock()
                .expect("slots")
                .get(&stream)
                .and_then(|slot| {
                    let ours = slot.session.as_ref().is_some_and(|x| Arc::ptr_eq(x, &s));
                    slot.lease.filter(|_| ours)
                });
            drop(s);
            let Some(epoch) = held else { continue };
            let sent = tokio::time::Instant::now();
            let now = self.clock.now_ms();
            match self
                .db
                .renew_stream_lease(stream, &self.holder, epoch, LEASE_TTL_MS, now)
                .await
            {
                Ok(true) => {
                    fence.renewed(sent);
                    failing = false;
                }
                Ok(false) => {
                    fence.lose();
                    self.lose_stream(stream).await;
                    return;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(%stream, error = %e, "renewing the stream's lease failed; its writes wait");
                    }
                    failing = true;
                }
            }
        }
    }

    /// Another node holds the stream's lease now (this one was frozen, or cut off, past the
    /// lease): the publisher is disconnected. A fenced session (see [`crate::fence`]), which
    /// that node continues, is dropped here without being finished.
    pub(crate) async fn lose_stream(self: &Arc<Self>, stream: StreamId) {
        tracing::warn!(%stream, "lost the stream's lease to another node; disconnecting");
        metrics::counter!("oxcast_live_leases_lost_total").increment(1);
        let fenced = {
            let mut slots = self.slots.lock().expect("slots");
            let Some(slot) = slots.get_mut(&stream) else {
                return;
            };
            slot.lease = None;
            slot.session.as_ref().is_some_and(|s| s.fence.is_fenced())
        };
        if !fenced {
            // Nothing continues this session elsewhere (a publisher that reached another node
            // started a new one there): it ends here as after any disconnection, recording
            // and all, in its own objects.
            self.disconnect(stream);
            return;
        }
        let actions = self.step(stream, Event::Lost);
        self.act(stream, actions).await;
    }

    /// Drops a session another node continues: no playlist ends, no recording is published.
    pub(crate) fn abandon(&self, stream: StreamId, id: SessionId) {
        let dropped = {
            let mut slots = self.slots.lock().expect("slots");
            let Some(slot) = slots.get_mut(&stream) else {
                return;
            };
            let ours = slot
                .session
                .as_ref()
                .is_some_and(|s| s.state.lock().expect("state").session_id == id);
            if !ours {
                return;
            }
            slot.session.take()
        };
        if let Some(s) = dropped {
            s.fence.lose();
            // Waiting viewers answer at once; they find the session on its new node.
            s.bump();
            if !s.state.lock().expect("state").ended {
                metrics::gauge!("oxcast_live_sessions_active").decrement(1.0);
            }
            self.forget_viewers(stream);
            tracing::info!(%stream, session = %id, "session dropped here: another node continues it");
        }
    }

    /// Gives back a lease taken for a publisher that was then refused.
    pub(crate) async fn release_lease_epoch(&self, stream: StreamId, epoch: i64) {
        if let Err(e) = self
            .db
            .release_stream_lease(stream, &self.holder, epoch)
            .await
        {
            tracing::warn!(%stream, error = %e, "could not release the stream's lease; it expires by itself");
        }
    }

    /// Gives the lease back when the session ends, so the stream may start anywhere at once.
    pub(crate) async fn release_lease(&self, stream: StreamId) {
        let epoch = self
            .slots
            .lock()
            .expect("slots")
            .get_mut(&stream)
            .and_then(|s| s.lease.take());
        if let Some(epoch) = epoch {
            if let Err(e) = self
                .db
                .release_stream_lease(stream, &self.holder, epoch)
                .await
            {
                tracing::warn!(%stream, error = %e, "could not release the stream's lease; it expires by itself");
            }
        }
    }
}
