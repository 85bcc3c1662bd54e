//! Stopping a stream from the outside: a reset key disconnects its publisher, and deleting the
//! stream ends its session at once (no grace period) with its recording published.
//!
//! On the node that runs the session the API calls these directly. A session's monitor also
//! checks the stream's row every few seconds, so a key reset or a deletion made through another
//! API node takes effect here too.

use std::sync::Arc;
use std::time::Duration;

use oxcast_base::StreamId;
use oxcast_live_core::slot::Event;

use crate::session::LiveManager;
use crate::slots::DRAIN;

impl LiveManager {
    /// Disconnects the stream's current publisher, if any; the session then waits for a
    /// reconnect as after any disconnection. Returns whether one was connected.
    pub fn disconnect(&self, stream: StreamId) -> bool {
        let slots = self.slots.lock().expect("slots");
        match slots.get(&stream) {
            Some(slot) if slot.core.has_publisher() => {
                slot.kick.cancel();
                true
            }
            _ => false,
        }
    }

    /// Ends the stream for good (it is being deleted): new publishers are refused, the current
    /// one is disconnected, and the session ends as soon as its encoder has drained, with its
    /// recording published, and the stream's live URLs stop answering. Returns when the session
    /// has ended (or a little after [`DRAIN`]).
    pub async fn end_stream(self: &Arc<Self>, stream: StreamId) {
        let now = self.clock.now_ms();
        let actions = self.step(stream, Event::Delete { now });
        self.act(stream, actions).await;
        let deadline = tokio::time::Instant::now() + DRAIN + Duration::from_secs(5);
        while self.slots.lock().expect("slots").contains_key(&stream) {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(%stream, "the deleted stream's session has not ended yet");
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
                self.renew_lease(stream).await;
                let actions = self.step(stream, Event::KeySeen { key: &s.stream_key });
                if !actions.is_empty() {
                    tracing::info!(%stream, "the stream key was reset; disconnecting the publisher");
                }
                self.act(stream, actions).await;
            }
        }
    }
}
