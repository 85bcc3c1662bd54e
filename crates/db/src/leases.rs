//! Live stream leases: the one live node allowed to run a stream's session, for a while.
//!
//! A node takes the lease when a publisher connects, renews it while the session runs, and
//! gives it back when the session ends. Another node's publisher is refused while the lease is
//! held; once it expires (the node died, or is frozen) anyone may take it, with a new epoch.
//! A node that cannot renew must stop writing the stream: the renewal is its fence.

use oxcast_base::clock::Millis;
use oxcast_base::StreamId;

use crate::{Db, Result};

/// A lease as held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLease {
    pub epoch: i64,
    pub expires_at: Millis,
}

impl Db {
    /// Takes `stream`'s lease for `holder` for `ttl_ms` if it is free, expired, or already
    /// `holder`'s (a new epoch each time it changes hands). `Ok(Err(holder))`: held by another.
    pub async fn take_stream_lease(
        &self,
        stream: StreamId,
        holder: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<std::result::Result<StreamLease, String>> {
        let expires_at = now + ttl_ms;
        let epoch: Option<i64> = sqlx::query_scalar(
            "INSERT INTO live_leases (stream_id, holder, epoch, expires_at, renewed_at) \
             VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (stream_id) DO UPDATE SET \
               epoch = CASE WHEN live_leases.holder = $2 THEN live_leases.epoch \
                            ELSE live_leases.epoch + 1 END, \
               holder = $2, expires_at = $3, renewed_at = $4 \
             WHERE live_leases.holder = $2 OR live_leases.expires_at <= $4 \
             RETURNING epoch",
        )
        .bind(stream.to_string())
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(epoch) = epoch {
            return Ok(Ok(StreamLease { epoch, expires_at }));
        }
        let other: Option<String> =
            sqlx::query_scalar("SELECT holder FROM live_leases WHERE stream_id = $1")
                .bind(stream.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(Err(other.unwrap_or_default()))
    }

    /// Extends the lease while `holder` still holds it at `epoch`; `false` when it was lost.
    pub async fn renew_stream_lease(
        &self,
        stream: StreamId,
        holder: &str,
        epoch: i64,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE live_leases SET expires_at = $4, renewed_at = $5 \
             WHERE stream_id = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(stream.to_string())
        .bind(holder)
        .bind(epoch)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Takes `stream`'s lease over from `from`, an encoder the ingest lost, before it expires:
    /// at once when `from` is `gone` (its connection was closed by its end: the process is
    /// dead), otherwise only once `from` has not renewed for `fence_ms` (a holder that cannot
    /// renew stops writing well within that time). Also takes a free or expired lease.
    /// `Ok(Err(holder))`: not yet, or held by someone else.
    #[allow(clippy::too_many_arguments)]
    pub async fn take_over_stream_lease(
        &self,
        stream: StreamId,
        holder: &str,
        from: &str,
        gone: bool,
        fence_ms: Millis,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<std::result::Result<StreamLease, String>> {
        let expires_at = now + ttl_ms;
        let epoch: Option<i64> = sqlx::query_scalar(
            "UPDATE live_leases SET holder = $2, epoch = epoch + 1, expires_at = $3, renewed_at = $4 \
             WHERE stream_id = $1 AND holder <> $2 \
               AND ((holder = $5 AND ($6 = 1 OR renewed_at <= $4 - $7)) OR expires_at <= $4) \
             RETURNING epoch",
        )
        .bind(stream.to_string())
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .bind(from)
        .bind(i64::from(gone))
        .bind(fence_ms)
        .fetch_optional(&self.pool)
        .await?;
        match epoch {
            Some(epoch) => Ok(Ok(StreamLease { epoch, expires_at })),
            // Free, expired, never taken, or already ours.
            None => self.take_stream_lease(stream, holder, ttl_ms, now).await,
        }
    }

    /// Who holds `stream`'s lease at `now`, if anyone: the live node running (or holding in its
    /// reconnect grace) the stream's session. `None` when it is free, expired or released.
    pub async fn stream_lease_holder(
        &self,
        stream: StreamId,
        now: Millis,
    ) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT holder FROM live_leases WHERE stream_id = $1 AND expires_at > $2",
        )
        .bind(stream.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Gives the lease back (if still held at `epoch`), so another node may take it at once.
    pub async fn release_stream_lease(
        &self,
        stream: StreamId,
        holder: &str,
        epoch: i64,
    ) -> Result<()> {
        // Expired rather than deleted: epochs keep growing, whoever holds the stream next.
        sqlx::query(
            "UPDATE live_leases SET expires_at = 0 \
             WHERE stream_id = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(stream.to_string())
        .bind(holder)
        .bind(epoch)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;

    #[tokio::test]
    async fn one_holder_at_a_time_until_expiry_then_a_new_epoch() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k", 1).await.unwrap();
            let a = db
                .take_stream_lease(s.id, "a", 10_000, 0)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(a.epoch, 1);
            assert_eq!(
                db.take_stream_lease(s.id, "b", 10_000, 9_999)
                    .await
                    .unwrap(),
                Err("a".into()),
                "held until it expires"
            );
            // The holder itself may take it again (a reconnect), keeping its epoch.
            let again = db
                .take_stream_lease(s.id, "a", 10_000, 5_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((again.epoch, again.expires_at), (1, 15_000));
            assert!(db
                .renew_stream_lease(s.id, "a", 1, 10_000, 6_000)
                .await
                .unwrap());
            // Expired: another node takes it with a new epoch, and the old holder is fenced.
            let b = db
                .take_stream_lease(s.id, "b", 10_000, 16_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(b.epoch, 2);
            assert!(!db
                .renew_stream_lease(s.id, "a", 1, 10_000, 16_001)
                .await
                .unwrap());
            db.release_stream_lease(s.id, "a", 1).await.unwrap();
            assert_eq!(
                db.take_stream_lease(s.id, "a", 10_000, 16_002)
                    .await
                    .unwrap(),
                Err("b".into()),
                "a stale release changes nothing"
            );
            db.release_stream_lease(s.id, "b", 2).await.unwrap();
            let a2 = db
                .take_stream_lease(s.id, "a", 10_000, 16_003)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(a2.epoch, 3, "epochs only grow");
            // Deleting the stream drops its lease.
            assert!(db.delete_live_stream(s.id).await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn the_holder_is_read_until_the_lease_expires_or_is_released() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k", 1).await.unwrap();
            assert_eq!(
                db.stream_lease_holder(s.id, 0).await.unwrap(),
                None,
                "never taken"
            );
            let a = db
                .take_stream_lease(s.id, "a:1", 10_000, 0)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                db.stream_lease_holder(s.id, 9_999)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("a:1")
            );
            assert_eq!(
                db.stream_lease_holder(s.id, 10_000).await.unwrap(),
                None,
                "expired"
            );
            assert!(db
                .renew_stream_lease(s.id, "a:1", a.epoch, 10_000, 5_000)
                .await
                .unwrap());
            assert_eq!(
                db.stream_lease_holder(s.id, 14_999)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("a:1"),
                "renewed"
            );
            db.release_stream_lease(s.id, "a:1", a.epoch).await.unwrap();
            assert_eq!(
                db.stream_lease_holder(s.id, 6_000).await.unwrap(),
                None,
                "released"
            );
            // Another stream's lease is not this one's.
            let t = db.create_live_stream("other", "k2", 1).await.unwrap();
            db.take_stream_lease(t.id, "b:2", 10_000, 6_000)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(db.stream_lease_holder(s.id, 6_001).await.unwrap(), None);
            assert_eq!(
                db.stream_lease_holder(t.id, 6_001)
                    .await
                    .unwrap()
                    .as_deref(),
                Some("b:2")
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_lost_holder_is_taken_over_at_once_when_gone_else_after_the_fence() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k", 1).await.unwrap();
            let a = db
                .take_stream_lease(s.id, "a", 10_000, 0)
                .await
                .unwrap()
                .unwrap();
            assert!(db
                .renew_stream_lease(s.id, "a", a.epoch, 10_000, 1_000)
                .await
                .unwrap());
            // Silent but maybe alive: not before it has missed renewing for the fence.
            assert_eq!(
                db.take_over_stream_lease(s.id, "b", "a", false, 2_500, 10_000, 3_499)
                    .await
                    .unwrap(),
                Err("a".into())
            );
            // Only the holder the ingest lost can be taken over.
            assert_eq!(
                db.take_over_stream_lease(s.id, "b", "x", true, 2_500, 10_000, 3_499)
                    .await
                    .unwrap(),
                Err("a".into())
            );
            let b = db
                .take_over_stream_lease(s.id, "b", "a", false, 2_500, 10_000, 3_500)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(b.epoch, a.epoch + 1);
            assert!(
                !db.renew_stream_lease(s.id, "a", a.epoch, 10_000, 3_600)
                    .await
                    .unwrap(),
                "the old holder finds it lost"
            );
            // A holder whose connection closed is dead: no wait.
            let c = db
                .take_over_stream_lease(s.id, "c", "b", true, 2_500, 10_000, 3_600)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.epoch, b.epoch + 1);
            // Taking over what one holds already keeps it.
            let again = db
                .take_over_stream_lease(s.id, "c", "b", true, 2_500, 10_000, 3_700)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.epoch, c.epoch);
        })
        .await;
    }
}
