//! Stopping a stream from the outside: a reset key disconnects its publisher, and deleting the
//! stream ends its session at once (no grace period) with its recording published.
//!
//! On the node that runs the session the API calls these directly. A session's monitor also
//! checks the stream's row every few seconds, so a key reset or a deletion made through another
//! API node takes effect here too.

use std::sync::Arc;
use std::time::Duration;

use oxcast_base::StreamId;

use crate::session::LiveManager;

/// How long ending a stream waits for its encoder to drain what the publisher sent.
const DRAIN: Duration = Duration::from_secs(15);

impl LiveManager {
    /// Disconnects the stream's current publisher, if any; the session then waits for a
    /// reconnect as after any disconnection. Returns whether one was connected.
    pub fn disconnect(&self, stream: StreamId) -> bool {
        let slots = self.slots.lock().expect("slots");
        match slots.get(&stream) {
            Some(slot) if slot.publisher => {
                slot.kick.cancel();
                true
            }
            _ => false,
        }
    }

    /// Ends the stream for good (it is being deleted): new publishers are refused, the current
    /// one is disconnected, and the session ends as soon as its encoder has drained, with its
    /// recording published, and the stream's live URLs stop answering. Returns when the session
    /// has ended (or after [`DRAIN`]).
    pub async fn end_stream(&self, stream: StreamId) {
        let session = {
            let mut slots = self.slots.lock().expect("slots");
            let slot = slots.entry(stream).or_default();
            slot.closed.cancel();
            slot.kick.cancel();
            slot.session.clone()
        };
        let Some(session) = session else {
            self.slots.lock().expect("slots").remove(&stream);
            return;
        };
        // Let the epoch end by itself first, so that what the encoder still holds is packaged.
        let mut changed = session.changed.subscribe();
        let drained = async {
            loop {
                let busy = {
                    let st = session.state.lock().expect("state");
                    st.publishing && !st.ended
                };
                if !busy || changed.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(DRAIN, drained).await.is_err() {
            tracing::warn!(%stream, "the encoder did not drain in time; ending the session anyway");
        }
        self.finish(&session).await;
        // The stream is gone: its live URLs stop answering (the recording plays as a video).
        self.slots.lock().expect("slots").remove(&stream);
    }

    /// What the monitor checks every few seconds: a deleted stream is ended, a publisher whose
    /// key was reset is disconnected.
    pub(crate) async fn check_stream(self: &Arc<Self>, stream: StreamId) {
        let row = match self.db.live_stream(stream).await {
            Ok(r) => r,
            // The database being away is no reason to stop a stream.
            Err(_) => return,
        };
        match row {
            None => {
                tracing::info!(%stream, "the stream was deleted; ending its session");
                self.end_stream(stream).await;
            }
            Some(s) => {
                let stale = {
                    let slots = self.slots.lock().expect("slots");
                    slots
                        .get(&stream)
                        .is_some_and(|slot| slot.publisher && slot.key != s.stream_key)
                };
                if stale && self.disconnect(stream) {
                    tracing::info!(%stream, "the stream key was reset; publisher disconnected");
                }
            }
        }
    }
}
