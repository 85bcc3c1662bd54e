//! Live viewers counted on other API nodes: reported here every few seconds by each node, and
//! summed by the node that encodes the stream (its health and viewer count).

use oxcast_base::clock::Millis;
use oxcast_base::StreamId;

use crate::{Db, Result};

impl Db {
    /// Records `node`'s current viewer counts (a count of 0 too: it replaces the last one).
    pub async fn report_viewers(
        &self,
        node: &str,
        counts: &[(StreamId, u64)],
        now: Millis,
    ) -> Result<()> {
        for (stream, viewers) in counts {
            let r = sqlx::query(
                "INSERT INTO live_viewer_counts (node, stream_id, viewers, at) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (node, stream_id) DO UPDATE SET viewers = $3, at = $4",
            )
            .bind(node)
            .bind(stream.to_string())
            .bind(*viewers as i64)
            .bind(now)
            .execute(&self.pool)
            .await;
            match r {
                Ok(_) => {}
                // The stream was deleted meanwhile: nothing to count.
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Viewers of `stream` that other nodes reported since `since`.
    pub async fn remote_viewers(&self, stream: StreamId, since: Millis) -> Result<u64> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT CAST(SUM(viewers) AS BIGINT) FROM live_viewer_counts \
             WHERE stream_id = $1 AND at >= $2",
        )
        .bind(stream.to_string())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;

    #[tokio::test]
    async fn fresh_reports_are_summed_and_replaced() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k", 1).await.unwrap();
            let other = db.create_live_stream("other", "k2", 1).await.unwrap();
            assert_eq!(db.remote_viewers(s.id, 0).await.unwrap(), 0);
            db.report_viewers("b", &[(s.id, 3), (other.id, 9)], 100)
                .await
                .unwrap();
            db.report_viewers("c", &[(s.id, 4)], 200).await.unwrap();
            assert_eq!(db.remote_viewers(s.id, 0).await.unwrap(), 7);
            assert_eq!(
                db.remote_viewers(s.id, 150).await.unwrap(),
                4,
                "b's is stale"
            );
            db.report_viewers("b", &[(s.id, 0)], 300).await.unwrap();
            assert_eq!(db.remote_viewers(s.id, 0).await.unwrap(), 4);
            // A stream deleted under a report is skipped, not an error.
            assert!(db.delete_live_stream(other.id).await.unwrap());
            db.report_viewers("b", &[(other.id, 1), (s.id, 2)], 400)
                .await
                .unwrap();
            assert_eq!(db.remote_viewers(s.id, 350).await.unwrap(), 2);
        })
        .await;
    }
}
