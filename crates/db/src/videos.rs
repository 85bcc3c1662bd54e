//! Video rows.

use oxcast_base::clock::Millis;
use oxcast_base::VideoId;
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::model::{Rendition, Video};
use crate::{corrupt, get_id, Db, Result};

const COLUMNS: &str = "id, title, filename, status, progress, error, duration_s, width, height, \
                       renditions, source_size, created_at, updated_at";

pub(crate) fn video_from_row(row: &AnyRow) -> Result<Video> {
    let status: String = row.try_get("status")?;
    let renditions: String = row.try_get("renditions")?;
    Ok(Video {
        id: get_id(row, "id", "videos")?,
        title: row.try_get("title")?,
        filename: row.try_get("filename")?,
        status: status.parse().map_err(|e| corrupt("videos", e))?,
        progress: row.try_get("progress")?,
        error: row.try_get("error")?,
        duration_s: row.try_get("duration_s")?,
        width: row.try_get::<Option<i64>, _>("width")?.map(|v| v as u32),
        height: row.try_get::<Option<i64>, _>("height")?.map(|v| v as u32),
        renditions: serde_json::from_str(&renditions).map_err(|e| corrupt("videos", e))?,
        source_size: row.try_get::<i64, _>("source_size")? as u64,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// What a finished pipeline records about the published video.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub duration_s: f64,
    pub width: u32,
    pub height: u32,
    pub renditions: Vec<Rendition>,
}

impl Db {
    pub async fn video(&self, id: VideoId) -> Result<Option<Video>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM videos WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(video_from_row).transpose()
    }

    /// Newest first.
    pub async fn videos(&self, limit: i64) -> Result<Vec<Video>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM videos ORDER BY created_at DESC, id LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(video_from_row).collect()
    }

    /// Of `ids`, those with a video row.
    pub async fn existing_videos(
        &self,
        ids: &[VideoId],
    ) -> Result<std::collections::HashSet<VideoId>> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(200) {
            let sql = format!(
                "SELECT id FROM videos WHERE id IN ({})",
                crate::uploads::placeholders(chunk.len())
            );
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for id in q.fetch_all(&self.pool).await? {
                out.insert(id.parse().map_err(|e| crate::corrupt("videos", e))?);
            }
        }
        Ok(out)
    }

    /// Deletes the video and, by cascade, its upload, parts and jobs. Returns whether it existed.
    pub async fn delete_video(&self, id: VideoId) -> Result<bool> {
        let r = sqlx::query("DELETE FROM videos WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn set_video_processing(
        &self,
        id: VideoId,
        progress: f64,
        now: Millis,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE videos SET status = 'processing', progress = $2, error = NULL, updated_at = $3 \
             WHERE id = $1 AND status IN ('queued', 'processing')",
        )
        .bind(id.to_string())
        .bind(progress.clamp(0.0, 1.0))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Publishes a video that no job produced (a finished live session's recording).
    pub async fn set_video_ready(&self, id: VideoId, p: &Published, now: Millis) -> Result<()> {
        let renditions = serde_json::to_string(&p.renditions).expect("renditions serialize");
        sqlx::query(
            "UPDATE videos SET status = 'ready', progress = 1, error = NULL, duration_s = $2, \
             width = $3, height = $4, renditions = $5, updated_at = $6 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(p.duration_s)
        .bind(p.width as i64)
        .bind(p.height as i64)
        .bind(renditions)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_video_failed(&self, id: VideoId, error: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE videos SET status = 'failed', error = $2, updated_at = $3 WHERE id = $1",
        )
        .bind(id.to_string())
        .bind(error)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Back to `queued` after a failed attempt that will be retried.
    pub async fn set_video_queued(&self, id: VideoId, note: &str, now: Millis) -> Result<()> {
        sqlx::query(
            "UPDATE videos SET status = 'queued', progress = 0, error = $2, updated_at = $3 \
             WHERE id = $1 AND status <> 'ready'",
        )
        .bind(id.to_string())
        .bind(note)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::each_backend;
    use crate::{JobOutcome, NewUpload, Published, Rendition, UploadPart, VideoStatus};

    /// The worker's path through a video's states, with every column read back.
    #[tokio::test]
    async fn a_video_goes_from_queued_through_processing_to_ready() {
        each_backend(|db| async move {
            let new = NewUpload {
                title: "Título ✓",
                filename: "f.mp4",
                size: 3_000_000_000,
                part_size: 3_000_000_000,
                expires_at: 9,
            };
            let (video, up) = db.create_upload(&new, 1).await.unwrap();
            assert_eq!(
                db.upload_for_video(video.id).await.unwrap(),
                Some(up.clone())
            );
            let part = UploadPart {
                part_number: 1,
                size: 3_000_000_000,
                etag: "e".into(),
                object: None,
            };
            db.put_part(up.id, &part, 2).await.unwrap();
            db.complete_upload(up.id, &[(1, "e".into())], 3, 3)
                .await
                .unwrap()
                .unwrap();
            let job = db.claim_job("w", 4, 1000).await.unwrap().unwrap();
            db.set_video_processing(video.id, 0.25, 5).await.unwrap();
            let v = db.video(video.id).await.unwrap().unwrap();
            assert_eq!(
                (v.status, v.progress, v.updated_at),
                (VideoStatus::Processing, 0.25, 5)
            );
            db.set_video_queued(video.id, "retrying", 6).await.unwrap();
            let v = db.video(video.id).await.unwrap().unwrap();
            assert_eq!(
                (v.status, v.error.as_deref()),
                (VideoStatus::Queued, Some("retrying"))
            );

            let published = Published {
                duration_s: 12.5,
                width: 1920,
                height: 1080,
                renditions: vec![Rendition {
                    name: "1080p".into(),
                    width: 1920,
                    height: 1080,
                    bandwidth: 5_000_000,
                    codecs: "avc1.640028,mp4a.40.2".into(),
                }],
            };
            assert!(db.publish_video(&job, &published, 7).await.unwrap());
            assert!(!db.finish_job(&job, &JobOutcome::Done, 8).await.unwrap());
            let v = db.video(video.id).await.unwrap().unwrap();
            assert_eq!(v.status, VideoStatus::Ready);
            assert_eq!((v.progress, v.duration_s), (1.0, Some(12.5)));
            assert_eq!((v.width, v.height), (Some(1920), Some(1080)));
            assert_eq!(v.renditions, published.renditions);
            assert_eq!(
                (v.title.as_str(), v.source_size),
                ("Título ✓", 3_000_000_000)
            );
            assert_eq!((v.created_at, v.updated_at), (1, 7));
            // A ready video is not sent back to the queue.
            db.set_video_queued(video.id, "late", 9).await.unwrap();
            assert_eq!(
                db.video(video.id).await.unwrap().unwrap().status,
                VideoStatus::Ready
            );
        })
        .await;
    }

    #[tokio::test]
    async fn listing_lookup_failure_and_deletion() {
        each_backend(|db| async move {
            let new = |title| NewUpload {
                title,
                filename: "f",
                size: 1,
                part_size: 1,
                expires_at: 9,
            };
            let (a, _) = db.create_upload(&new("a"), 1).await.unwrap();
            let (b, _) = db.create_upload(&new("b"), 2).await.unwrap();
            let list = db.videos(10).await.unwrap();
            assert_eq!(list.iter().map(|v| v.id).collect::<Vec<_>>(), [b.id, a.id]);
            assert_eq!(db.videos(1).await.unwrap().len(), 1);
            let gone = oxcast_base::VideoId::new();
            let found = db.existing_videos(&[a.id, gone, b.id]).await.unwrap();
            assert_eq!(found, [a.id, b.id].into_iter().collect());
            db.set_video_failed(a.id, "not a video", 3).await.unwrap();
            let v = db.video(a.id).await.unwrap().unwrap();
            assert_eq!(
                (v.status, v.error.as_deref()),
                (VideoStatus::Failed, Some("not a video"))
            );
            assert!(db.delete_video(a.id).await.unwrap());
            assert!(db.video(a.id).await.unwrap().is_none());
            db.set_video_ready(
                b.id,
                &Published {
                    duration_s: 1.0,
                    width: 2,
                    height: 2,
                    renditions: vec![],
                },
                4,
            )
            .await
            .unwrap();
            assert_eq!(
                db.video(b.id).await.unwrap().unwrap().status,
                VideoStatus::Ready
            );
        })
        .await;
    }
}
