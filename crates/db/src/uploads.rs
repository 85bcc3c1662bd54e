//! Uploads and their parts, and the completion that turns an upload into queued work.

use oxcast_base::clock::Millis;
use oxcast_base::{JobId, UploadId, VideoId};
use sqlx::any::AnyRow;
use sqlx::Row;

use crate::jobs::JobKind;
use crate::model::{Upload, UploadPart, UploadState, Video};
use crate::videos::video_from_row;
use crate::{corrupt, get_id, Db, Result};

/// Why `complete` refused; each names what the client must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompleteError {
    #[error("unknown upload")]
    NotFound,
    #[error("missing parts: {0:?}")]
    MissingParts(Vec<u32>),
    #[error("parts whose ETag does not match the stored part: {0:?}")]
    EtagMismatch(Vec<u32>),
    #[error("parts that are not part of this upload: {0:?}")]
    UnknownParts(Vec<u32>),
    #[error("stored parts add up to {stored} bytes, the upload declared {declared}")]
    SizeMismatch { stored: u64, declared: u64 },
}

fn upload_from_row(row: &AnyRow) -> Result<Upload> {
    let state: String = row.try_get("state")?;
    Ok(Upload {
        id: get_id(row, "id", "uploads")?,
        video_id: get_id(row, "video_id", "uploads")?,
        size: row.try_get::<i64, _>("size")? as u64,
        part_size: row.try_get::<i64, _>("part_size")? as u64,
        state: state.parse().map_err(|e| corrupt("uploads", e))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

/// What a new upload is created with.
#[derive(Debug, Clone)]
pub struct NewUpload<'a> {
    pub title: &'a str,
    pub filename: &'a str,
    pub size: u64,
    pub part_size: u64,
    pub expires_at: Millis,
}

impl Db {
    /// Creates the video (status `uploading`) and its upload together.
    pub async fn create_upload(&self, new: &NewUpload<'_>, now: Millis) -> Result<(Video, Upload)> {
        let video_id = VideoId::new();
        let upload_id = UploadId::new();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO videos (id, title, filename, status, source_size, created_at, updated_at) \
             VALUES ($1, $2, $3, 'uploading', $4, $5, $5)",
        )
        .bind(video_id.to_string())
        .bind(new.title)
        .bind(new.filename)
        .bind(new.size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO uploads (id, video_id, size, part_size, state, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, 'open', $5, $6)",
        )
        .bind(upload_id.to_string())
        .bind(video_id.to_string())
        .bind(new.size as i64)
        .bind(new.part_size as i64)
        .bind(now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let video = self
            .video(video_id)
            .await?
            .ok_or_else(|| corrupt("videos", "vanished"))?;
        let upload = self
            .upload(upload_id)
            .await?
            .ok_or_else(|| corrupt("uploads", "vanished"))?;
        Ok((video, upload))
    }

    pub async fn upload(&self, id: UploadId) -> Result<Option<Upload>> {
        let row = sqlx::query(
            "SELECT id, video_id, size, part_size, state, created_at, expires_at FROM uploads WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    pub async fn upload_for_video(&self, video: VideoId) -> Result<Option<Upload>> {
        let row = sqlx::query(
            "SELECT id, video_id, size, part_size, state, created_at, expires_at FROM uploads WHERE video_id = $1",
        )
        .bind(video.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(upload_from_row).transpose()
    }

    /// Records a stored part; a re-sent part replaces the earlier record.
    pub async fn put_part(&self, upload: UploadId, part: &UploadPart, now: Millis) -> Result<()> {
        sqlx::query(
            "INSERT INTO upload_parts (upload_id, part_number, size, etag, updated_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (upload_id, part_number) DO UPDATE \
             SET size = excluded.size, etag = excluded.etag, updated_at = excluded.updated_at",
        )
        .bind(upload.to_string())
        .bind(part.part_number as i64)
        .bind(part.size as i64)
        .bind(&part.etag)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn parts(&self, upload: UploadId) -> Result<Vec<UploadPart>> {
        let rows = sqlx::query(
            "SELECT part_number, size, etag FROM upload_parts WHERE upload_id = $1 ORDER BY part_number",
        )
        .bind(upload.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UploadPart {
                    part_number: r.try_get::<i64, _>("part_number")? as u32,
                    size: r.try_get::<i64, _>("size")? as u64,
                    etag: r.try_get("etag")?,
                })
            })
            .collect()
    }

    /// Checks the client's part list against what is stored and, in one transaction, marks the
    /// upload complete, queues the video and enqueues its processing job: the COMPLETED event.
    /// Completing an already completed upload returns the video again and enqueues nothing.
    pub async fn complete_upload(
        &self,
        id: UploadId,
        claimed: &[(u32, String)],
        max_attempts: u32,
        now: Millis,
    ) -> Result<std::result::Result<Video, CompleteError>> {
        let Some(upload) = self.upload(id).await? else {
            return Ok(Err(CompleteError::NotFound));
        };
        if upload.state == UploadState::Open {
            let stored = self.parts(id).await?;
            if let Err(e) = check_parts(&upload, &stored, claimed) {
                return Ok(Err(e));
            }
            let mut tx = self.pool.begin().await?;
            let flipped = sqlx::query(
                "UPDATE uploads SET state = 'completed' WHERE id = $1 AND state = 'open'",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if flipped == 1 {
                sqlx::query(
                    "UPDATE videos SET status = 'queued', progress = 0, updated_at = $2 WHERE id = $1",
                )
                .bind(upload.video_id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO jobs (id, kind, video_id, state, attempts, max_attempts, run_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'queued', 0, $4, $5, $5, $5) ON CONFLICT (video_id, kind) DO NOTHING",
                )
                .bind(JobId::new().to_string())
                .bind(JobKind::ProcessVideo.as_str())
                .bind(upload.video_id.to_string())
                .bind(max_attempts as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        let row = sqlx::query(&format!(
            "SELECT {} FROM videos WHERE id = $1",
            "id, title, filename, status, progress, error, duration_s, width, height, renditions, source_size, created_at, updated_at"
        ))
        .bind(upload.video_id.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok(Ok(video_from_row(&row)?))
    }
}

fn check_parts(
    upload: &Upload,
    stored: &[UploadPart],
    claimed: &[(u32, String)],
) -> std::result::Result<(), CompleteError> {
    let count = upload.part_count();
    let unknown: Vec<u32> = claimed
        .iter()
        .map(|c| c.0)
        .filter(|&n| n == 0 || n > count)
        .collect();
    if !unknown.is_empty() {
        return Err(CompleteError::UnknownParts(unknown));
    }
    let missing: Vec<u32> = (1..=count)
        .filter(|n| {
            !stored.iter().any(|p| p.part_number == *n) || !claimed.iter().any(|c| c.0 == *n)
        })
        .collect();
    if !missing.is_empty() {
        return Err(CompleteError::MissingParts(missing));
    }
    let norm = |e: &str| e.trim().trim_matches('"').to_ascii_lowercase();
    let mismatched: Vec<u32> = claimed
        .iter()
        .filter(|(n, etag)| {
            stored
                .iter()
                .find(|p| p.part_number == *n)
                .is_none_or(|p| norm(&p.etag) != norm(etag))
        })
        .map(|c| c.0)
        .collect();
    if !mismatched.is_empty() {
        let mut m = mismatched;
        m.sort_unstable();
        m.dedup();
        return Err(CompleteError::EtagMismatch(m));
    }
    let total: u64 = stored
        .iter()
        .filter(|p| p.part_number <= count)
        .map(|p| p.size)
        .sum();
    if total != upload.size {
        return Err(CompleteError::SizeMismatch {
            stored: total,
            declared: upload.size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VideoStatus;
    use crate::testing::sqlite;

    async fn new_upload(db: &Db, size: u64, part_size: u64) -> (Video, Upload) {
        db.create_upload(
            &NewUpload {
                title: "t",
                filename: "f.mp4",
                size,
                part_size,
                expires_at: 10_000,
            },
            1,
        )
        .await
        .unwrap()
    }

    fn part(n: u32, size: u64, etag: &str) -> UploadPart {
        UploadPart {
            part_number: n,
            size,
            etag: etag.into(),
        }
    }

    #[tokio::test]
    async fn complete_checks_parts_then_enqueues_exactly_once() {
        let (db, _d) = sqlite().await;
        let (video, up) = new_upload(&db, 25, 10).await;
        assert_eq!(video.status, VideoStatus::Uploading);
        db.put_part(up.id, &part(2, 10, "\"b\""), 2).await.unwrap();
        db.put_part(up.id, &part(1, 10, "\"a\""), 2).await.unwrap();

        let claimed = vec![
            (1, "\"a\"".to_string()),
            (2, "\"b\"".to_string()),
            (3, "\"c\"".to_string()),
        ];
        let r = db.complete_upload(up.id, &claimed, 3, 3).await.unwrap();
        assert_eq!(r.unwrap_err(), CompleteError::MissingParts(vec![3]));

        db.put_part(up.id, &part(3, 5, "\"c\""), 4).await.unwrap();
        let wrong = vec![
            (1, "\"a\"".to_string()),
            (2, "\"x\"".to_string()),
            (3, "\"c\"".to_string()),
        ];
        let r = db.complete_upload(up.id, &wrong, 3, 5).await.unwrap();
        assert_eq!(r.unwrap_err(), CompleteError::EtagMismatch(vec![2]));

        let v = db
            .complete_upload(up.id, &claimed, 3, 6)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.status, VideoStatus::Queued);
        // A retried complete is harmless.
        let again = db
            .complete_upload(up.id, &claimed, 3, 7)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.id, v.id);
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(jobs, 1);
    }

    #[tokio::test]
    async fn resent_part_replaces_and_size_must_add_up() {
        let (db, _d) = sqlite().await;
        let (_, up) = new_upload(&db, 20, 10).await;
        db.put_part(up.id, &part(1, 10, "a"), 1).await.unwrap();
        db.put_part(up.id, &part(2, 9, "b"), 1).await.unwrap();
        db.put_part(up.id, &part(1, 10, "a2"), 2).await.unwrap();
        let parts = db.parts(up.id).await.unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].etag, "a2");
        let claimed = vec![(1, "a2".to_string()), (2, "b".to_string())];
        let r = db.complete_upload(up.id, &claimed, 3, 3).await.unwrap();
        assert_eq!(
            r.unwrap_err(),
            CompleteError::SizeMismatch {
                stored: 19,
                declared: 20
            }
        );
    }

    #[tokio::test]
    async fn unknown_part_numbers_are_named() {
        let (db, _d) = sqlite().await;
        let (_, up) = new_upload(&db, 10, 10).await;
        let r = db
            .complete_upload(up.id, &[(1, "a".into()), (9, "z".into())], 3, 3)
            .await
            .unwrap();
        assert_eq!(r.unwrap_err(), CompleteError::UnknownParts(vec![9]));
        let r = db
            .complete_upload(UploadId::new(), &[], 3, 3)
            .await
            .unwrap();
        assert_eq!(r.unwrap_err(), CompleteError::NotFound);
    }

    #[tokio::test]
    async fn deleting_the_video_cascades() {
        let (db, _d) = sqlite().await;
        let (video, up) = new_upload(&db, 10, 10).await;
        db.put_part(up.id, &part(1, 10, "a"), 1).await.unwrap();
        assert!(db.delete_video(video.id).await.unwrap());
        assert!(db.upload(up.id).await.unwrap().is_none());
        assert!(db.parts(up.id).await.unwrap().is_empty());
        assert!(!db.delete_video(video.id).await.unwrap());
    }
}
