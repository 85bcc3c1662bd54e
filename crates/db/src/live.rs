//! Live streams (a title and a stream key) and their sessions. Each session records into an
//! ordinary video row, which turns `ready` when the session ends.

use oxcast_base::clock::Millis;
use oxcast_base::{SessionId, StreamId, VideoId};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{corrupt, get_id, Db, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct LiveStream {
    pub id: StreamId,
    pub title: String,
    pub stream_key: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Live,
    Ended,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LiveSession {
    pub id: SessionId,
    pub stream_id: StreamId,
    pub video_id: VideoId,
    pub status: SessionStatus,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
}

fn stream_from_row(row: &AnyRow) -> Result<LiveStream> {
    Ok(LiveStream {
        id: get_id(row, "id", "live_streams")?,
        title: row.try_get("title")?,
        stream_key: row.try_get("stream_key")?,
        created_at: row.try_get("created_at")?,
    })
}

fn session_from_row(row: &AnyRow) -> Result<LiveSession> {
    let status: String = row.try_get("status")?;
    Ok(LiveSession {
        id: get_id(row, "id", "live_sessions")?,
        stream_id: get_id(row, "stream_id", "live_sessions")?,
        video_id: get_id(row, "video_id", "live_sessions")?,
        status: match status.as_str() {
            "live" => SessionStatus::Live,
            "ended" => SessionStatus::Ended,
            other => return Err(corrupt("live_sessions", format!("status {other:?}"))),
        },
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}

const STREAM_COLS: &str = "id, title, stream_key, created_at";
const SESSION_COLS: &str = "id, stream_id, video_id, status, started_at, ended_at";

impl Db {
    pub async fn create_live_stream(
        &self,
        title: &str,
        key: &str,
        now: Millis,
    ) -> Result<LiveStream> {
        let id = StreamId::new();
        sqlx::query(
            "INSERT INTO live_streams (id, title, stream_key, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.to_string())
        .bind(title)
        .bind(key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(LiveStream {
            id,
            title: title.to_string(),
            stream_key: key.to_string(),
            created_at: now,
        })
    }

    pub async fn live_stream(&self, id: StreamId) -> Result<Option<LiveStream>> {
        let row = sqlx::query(&format!(
            "SELECT {STREAM_COLS} FROM live_streams WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_from_row).transpose()
    }

    pub async fn live_stream_by_key(&self, key: &str) -> Result<Option<LiveStream>> {
        let row = sqlx::query(&format!(
            "SELECT {STREAM_COLS} FROM live_streams WHERE stream_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(stream_from_row).transpose()
    }

    pub async fn live_streams(&self) -> Result<Vec<LiveStream>> {
        let rows = sqlx::query(&format!(
            "SELECT {STREAM_COLS} FROM live_streams ORDER BY created_at DESC, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stream_from_row).collect()
    }

    pub async fn reset_stream_key(&self, id: StreamId, key: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE live_streams SET stream_key = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes the stream and its session rows; the recordings stay in the library as videos.
    pub async fn delete_live_stream(&self, id: StreamId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM live_streams WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Starts a session and the video that records it (status `processing` while live).
    pub async fn start_live_session(
        &self,
        stream: &LiveStream,
        title: &str,
        now: Millis,
    ) -> Result<LiveSession> {
        let session = LiveSession {
            id: SessionId::new(),
            stream_id: stream.id,
            video_id: VideoId::new(),
            status: SessionStatus::Live,
            started_at: now,
            ended_at: None,
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO videos (id, title, filename, status, source_size, created_at, updated_at) \
             VALUES ($1, $2, 'live', 'processing', 0, $3, $3)",
        )
        .bind(session.video_id.to_string())
        .bind(title)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO live_sessions (id, stream_id, video_id, status, started_at) VALUES ($1, $2, $3, 'live', $4)",
        )
        .bind(session.id.to_string())
        .bind(stream.id.to_string())
        .bind(session.video_id.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    pub async fn end_live_session(&self, id: SessionId, now: Millis) -> Result<()> {
        sqlx::query("UPDATE live_sessions SET status = 'ended', ended_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Sessions of a stream, newest first.
    pub async fn live_sessions(&self, stream: StreamId) -> Result<Vec<LiveSession>> {
        let rows = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM live_sessions WHERE stream_id = $1 ORDER BY started_at DESC, id"
        ))
        .bind(stream.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// The stream's session that is live now, if any (the newest, should a crashed node's be
    /// left behind).
    pub async fn current_live_session(&self, stream: StreamId) -> Result<Option<LiveSession>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM live_sessions WHERE stream_id = $1 AND status = 'live' \
             ORDER BY started_at DESC, id LIMIT 1"
        ))
        .bind(stream.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    pub async fn live_session(&self, id: SessionId) -> Result<Option<LiveSession>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLS} FROM live_sessions WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// Sessions left `live` by a process that died; they are ended (their recordings are
    /// published by the caller from what was stored). A session is orphaned when no other live
    /// process holds its stream's lease, or when a newer session of the stream is live (it
    /// runs elsewhere now). Leases held by `own_prefix` (this node's earlier processes,
    /// `{node_id}:`, at startup) are not another's; with `""` every valid lease counts.
    pub async fn orphaned_live_sessions(
        &self,
        own_prefix: &str,
        now: Millis,
    ) -> Result<Vec<LiveSession>> {
        let cols = SESSION_COLS
            .split(", ")
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = sqlx::query(&format!(
            "SELECT {cols} FROM live_sessions s WHERE s.status = 'live' AND ( \
               NOT EXISTS (SELECT 1 FROM live_leases l WHERE l.stream_id = s.stream_id \
                           AND l.expires_at > $1 \
                           AND ($2 = '' OR substr(l.holder, 1, length($2)) <> $2)) \
               OR EXISTS (SELECT 1 FROM live_sessions n WHERE n.stream_id = s.stream_id \
                          AND n.status = 'live' AND n.started_at > s.started_at))"
        ))
        .bind(now)
        .bind(own_prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(session_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;
    use crate::VideoStatus;

    #[tokio::test]
    async fn streams_sessions_and_keys() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k1", 1).await.unwrap();
            assert_eq!(db.live_stream_by_key("k1").await.unwrap().unwrap().id, s.id);
            assert!(db.reset_stream_key(s.id, "k2").await.unwrap());
            assert!(db.live_stream_by_key("k1").await.unwrap().is_none());
            assert!(
                db.create_live_stream("dup", "k2", 2).await.is_err(),
                "keys are unique"
            );

            let sess = db.start_live_session(&s, "show (live)", 10).await.unwrap();
            let v = db.video(sess.video_id).await.unwrap().unwrap();
            assert_eq!(v.status, VideoStatus::Processing);
            assert_eq!(db.orphaned_live_sessions("me:", 10).await.unwrap().len(), 1);
            let current = db.current_live_session(s.id).await.unwrap().unwrap();
            assert_eq!(current.id, sess.id);
            assert_eq!(db.live_session(sess.id).await.unwrap().unwrap(), current);
            db.end_live_session(sess.id, 20).await.unwrap();
            assert!(db.current_live_session(s.id).await.unwrap().is_none());
            assert!(db.live_session(sess.id).await.unwrap().unwrap().ended_at == Some(20));
            assert!(db
                .orphaned_live_sessions("me:", 20)
                .await
                .unwrap()
                .is_empty());
            let list = db.live_sessions(s.id).await.unwrap();
            assert_eq!(list[0].ended_at, Some(20));

            assert!(db.delete_live_stream(s.id).await.unwrap());
            assert!(db.live_sessions(s.id).await.unwrap().is_empty());
            assert!(
                db.video(sess.video_id).await.unwrap().is_some(),
                "the recording stays"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_session_another_live_node_runs_is_not_an_orphan() {
        each_backend(|db| async move {
            let s = db.create_live_stream("show", "k1", 1).await.unwrap();
            let sess = db.start_live_session(&s, "show (live)", 10).await.unwrap();
            db.take_stream_lease(s.id, "other:7", 10_000, 10)
                .await
                .unwrap()
                .unwrap();
            let orphans = |now| db.orphaned_live_sessions("me:", now);
            assert!(orphans(20).await.unwrap().is_empty(), "runs on other:7");
            assert_eq!(orphans(10_010).await.unwrap().len(), 1, "its lease expired");
            // Our own earlier process's lease does not protect it: that process is gone.
            db.release_stream_lease(s.id, "other:7", 1).await.unwrap();
            db.take_stream_lease(s.id, "me:1", 10_000, 30)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(orphans(40).await.unwrap()[0].id, sess.id);
            assert!(
                db.orphaned_live_sessions("", 40).await.unwrap().is_empty(),
                "a running process's own lease protects its session"
            );
            // A newer session of the stream, live elsewhere: the old one is stale.
            db.release_stream_lease(s.id, "me:1", 2).await.unwrap();
            db.take_stream_lease(s.id, "other:8", 10_000, 50)
                .await
                .unwrap()
                .unwrap();
            assert!(orphans(60).await.unwrap().is_empty());
            let newer = db.start_live_session(&s, "show (again)", 70).await.unwrap();
            let o = orphans(80).await.unwrap();
            assert_eq!(o.iter().map(|x| x.id).collect::<Vec<_>>(), vec![sess.id]);
            assert_ne!(newer.id, sess.id);
        })
        .await;
    }
}
