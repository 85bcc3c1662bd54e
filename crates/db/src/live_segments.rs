//! The index of a live session's completed segments, one row per rendition and segment, written
//! after the segment's object is stored. The encoder that takes a session over (its encoder
//! was lost) reads it to continue the session without reading the segments back.

use oxcast_base::SessionId;
use sqlx::Row;

use crate::{Db, Result};

/// A completed segment, as the live packager describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentRow {
    pub rendition: String,
    pub number: u64,
    pub epoch: u32,
    pub start_ticks: u64,
    pub ticks: u64,
    pub duration_s: f64,
    pub discontinuity: bool,
    pub pdt_ms: i64,
    pub bytes: u64,
}

impl Db {
    /// Records a stored segment. Recording it again (a retried write) changes nothing.
    pub async fn add_live_segment(&self, session: SessionId, s: &SegmentRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO live_segments (session_id, rendition, number, epoch, start_ticks, ticks, \
             duration_s, discontinuity, pdt_ms, bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (session_id, rendition, number) DO NOTHING",
        )
        .bind(session.to_string())
        .bind(&s.rendition)
        .bind(s.number as i64)
        .bind(i64::from(s.epoch))
        .bind(s.start_ticks as i64)
        .bind(s.ticks as i64)
        .bind(s.duration_s)
        .bind(i64::from(s.discontinuity))
        .bind(s.pdt_ms)
        .bind(s.bytes as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every recorded segment of `session`, by rendition and number.
    pub async fn live_segments(&self, session: SessionId) -> Result<Vec<SegmentRow>> {
        let rows = sqlx::query(
            "SELECT rendition, number, epoch, start_ticks, ticks, duration_s, discontinuity, \
             pdt_ms, bytes FROM live_segments WHERE session_id = $1 ORDER BY rendition, number",
        )
        .bind(session.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let u = |c: &str| -> Result<u64> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
                Ok(SegmentRow {
                    rendition: r.try_get("rendition")?,
                    number: u("number")?,
                    epoch: u("epoch")?.min(u64::from(u32::MAX)) as u32,
                    start_ticks: u("start_ticks")?,
                    ticks: u("ticks")?,
                    duration_s: r.try_get("duration_s")?,
                    discontinuity: r.try_get::<i64, _>("discontinuity")? != 0,
                    pdt_ms: r.try_get("pdt_ms")?,
                    bytes: u("bytes")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;

    #[tokio::test]
    async fn segments_are_indexed_once_and_read_back_in_order() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k", 1).await.unwrap();
            let sess = db.start_live_session(&s, "show (live)", 10).await.unwrap();
            let row = |rendition: &str, number: u64| SegmentRow {
                rendition: rendition.into(),
                number,
                epoch: 1,
                start_ticks: number * 180_000,
                ticks: 180_000,
                duration_s: 2.0,
                discontinuity: number == 3,
                pdt_ms: 1_700_000_000_000 + number as i64 * 2000,
                bytes: 123_456,
            };
            for (r, n) in [("720p", 4), ("720p", 3), ("audio", 3)] {
                db.add_live_segment(sess.id, &row(r, n)).await.unwrap();
            }
            let mut changed = row("720p", 3);
            changed.bytes = 1;
            db.add_live_segment(sess.id, &changed).await.unwrap();
            let got = db.live_segments(sess.id).await.unwrap();
            assert_eq!(got, [row("720p", 3), row("720p", 4), row("audio", 3)]);
            assert!(db.live_segments(SessionId::new()).await.unwrap().is_empty());
        })
        .await;
    }
}
