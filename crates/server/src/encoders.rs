//! The internal load balancer of an `ingest` node without the `live` role: which live encoders
//! a publisher's stream is relayed to, from the encoders' heartbeats and the stream's lease.
//!
//! The encoder that holds the stream's lease comes first (a publisher that reconnects within
//! `live.grace_s` goes back to the node that keeps its session), then the others, the least
//! loaded first. An encoder the relay just lost is never offered again for that stream.

use oxcast_base::clock::{Millis, SharedClock};
use oxcast_db::{Db, LiveEncoder};
use oxcast_ingest::relay::{Encoders, Route, Target};
use oxcast_ingest::Refusal;

/// Encoders heard from within this are offered. Relay encoders beat every
/// [`crate::heartbeat::RELAY_EVERY`] (2 s): this spares a few missed beats and some clock skew
/// between machines. A dead encoder still listed costs one refused (or, for a machine gone
/// from the network, a timed-out) connection before the relay tries the next; a cleanly stopped
/// one leaves the list at once.
pub const FRESH_MS: Millis = 15_000;

pub struct DbEncoders {
    pub db: Db,
    pub clock: SharedClock,
}

#[async_trait::async_trait]
impl Encoders for DbEncoders {
    async fn route(&self, key: &str, lost: Option<&str>) -> Result<Route, Refusal> {
        let internal = |what: &str, e: oxcast_db::Error| {
            tracing::error!(error = %e, "{what} failed");
            Refusal("internal error".into())
        };
        let stream = match self.db.live_stream_by_key(key).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                metrics::counter!("oxcast_live_publish_refused_total", "reason" => "key")
                    .increment(1);
                return Err(Refusal("unknown stream key".into()));
            }
            Err(e) => return Err(internal("stream key lookup", e)),
        };
        let now = self.clock.now_ms();
        let holder = self
            .db
            .stream_lease_holder(stream.id, now)
            .await
            .map_err(|e| internal("reading the stream's lease", e))?;
        let encoders = self
            .db
            .live_encoders(now, FRESH_MS)
            .await
            .map_err(|e| internal("listing the live encoders", e))?;
        let targets = order(encoders, holder.as_deref(), lost);
        if targets.is_empty() {
            tracing::warn!(stream = %stream.id, lost, "no live encoder is available");
            return Err(Refusal(
                "no live encoder is available; try again shortly".into(),
            ));
        }
        Ok(Route {
            targets,
            takeover: None,
        })
    }
}

/// The encoders to try, best first: the lease `holder` (if it is among them), then the rest
/// the least loaded first (ties keep `encoders`' order); never `lost`. Encoder ids and lease
/// holders are the same `{node_id}:{pid}` strings.
pub fn order(
    mut encoders: Vec<LiveEncoder>,
    holder: Option<&str>,
    lost: Option<&str>,
) -> Vec<Target> {
    encoders.retain(|e| Some(e.id.as_str()) != lost && !e.relay_addr.is_empty());
    // Stable: equal loads stay in the database's order (load average, most recently seen).
    encoders.sort_by_key(|e| (Some(e.id.as_str()) != holder, e.live_sessions));
    encoders
        .into_iter()
        .map(|e| Target {
            holder: e.id,
            addr: e.relay_addr,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(id: &str, sessions: u32) -> LiveEncoder {
        LiveEncoder {
            id: id.into(),
            relay_addr: format!("{id}.internal:1940"),
            live_sessions: sessions,
        }
    }

    fn ids(t: &[Target]) -> Vec<&str> {
        t.iter().map(|t| t.holder.as_str()).collect()
    }

    #[test]
    fn the_lease_holder_first_then_the_least_loaded_never_the_lost_one() {
        let list = || vec![enc("a:1", 0), enc("b:2", 0), enc("c:3", 2), enc("d:4", 1)];
        let t = order(list(), None, None);
        assert_eq!(
            ids(&t),
            ["a:1", "b:2", "d:4", "c:3"],
            "ties keep their order"
        );
        assert_eq!(t[0].addr, "a:1.internal:1940");
        // A reconnecting publisher goes back to the encoder that keeps its session.
        assert_eq!(
            ids(&order(list(), Some("c:3"), None)),
            ["c:3", "a:1", "b:2", "d:4"]
        );
        // A holder that is not a live encoder (gone, or not relaying) changes nothing.
        assert_eq!(
            ids(&order(list(), Some("x:9"), None)),
            ["a:1", "b:2", "d:4", "c:3"]
        );
        // The encoder the relay lost is never offered, even while it still holds the lease.
        assert_eq!(
            ids(&order(list(), Some("c:3"), Some("c:3"))),
            ["a:1", "b:2", "d:4"]
        );
        assert_eq!(
            ids(&order(list(), None, Some("a:1"))),
            ["b:2", "d:4", "c:3"]
        );
        assert!(order(vec![enc("a:1", 0)], Some("a:1"), Some("a:1")).is_empty());
        assert!(order(Vec::new(), None, None).is_empty());
        let mut silent = enc("e:5", 0);
        silent.relay_addr.clear();
        assert!(
            order(vec![silent], None, None).is_empty(),
            "no relay address"
        );
    }
}
