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
    #[error("the upload is already complete with other parts or ETags than these")]
    AlreadyCompleted,
}

/// What became of a part PUT's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartRecorded {
    /// Recorded; `replaced` is the earlier record of the same part, whose object is now unused.
    Stored { replaced: Option<UploadPart> },
    /// The upload (or its video) was deleted meanwhile.
    UploadGone,
    /// The upload was completed meanwhile; parts can no longer change.
    UploadClosed,
}

pub(crate) fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn part_from_row(r: &AnyRow) -> Result<UploadPart> {
    Ok(UploadPart {
        part_number: r.try_get::<i64, _>("part_number")? as u32,
        size: r.try_get::<i64, _>("size")? as u64,
        etag: r.try_get("etag")?,
        object: r.try_get("object")?,
    })
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

    /// Records a stored part; a re-sent part replaces the earlier record, which is returned so
    /// the caller can remove its object. Serialised per upload with `complete` (both start by
    /// writing the upload row), so a part cannot change under a completion.
    pub async fn put_part(
        &self,
        upload: UploadId,
        part: &UploadPart,
        now: Millis,
    ) -> Result<PartRecorded> {
        let mut tx = self.pool.begin().await?;
        let open = sqlx::query("UPDATE uploads SET state = state WHERE id = $1 AND state = 'open'")
            .bind(upload.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if open == 0 {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT state FROM uploads WHERE id = $1")
                    .bind(upload.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            return Ok(match exists {
                None => PartRecorded::UploadGone,
                Some(_) => PartRecorded::UploadClosed,
            });
        }
        let old = sqlx::query(
            "DELETE FROM upload_parts WHERE upload_id = $1 AND part_number = $2 \
             RETURNING part_number, size, etag, object",
        )
        .bind(upload.to_string())
        .bind(part.part_number as i64)
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO upload_parts (upload_id, part_number, size, etag, object, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(upload.to_string())
        .bind(part.part_number as i64)
        .bind(part.size as i64)
        .bind(&part.etag)
        .bind(part.object.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(PartRecorded::Stored {
            replaced: old.as_ref().map(part_from_row).transpose()?,
        })
    }

    pub async fn parts(&self, upload: UploadId) -> Result<Vec<UploadPart>> {
        let rows = sqlx::query(
            "SELECT part_number, size, etag, object FROM upload_parts WHERE upload_id = $1 ORDER BY part_number",
        )
        .bind(upload.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(part_from_row).collect()
    }

    /// Uploads still open after `expires_before`: their URLs are dead and nobody can finish them.
    pub async fn expired_uploads(&self, expires_before: Millis) -> Result<Vec<Upload>> {
        let rows = sqlx::query(
            "SELECT id, video_id, size, part_size, state, created_at, expires_at FROM uploads \
             WHERE state = 'open' AND expires_at < $1 ORDER BY expires_at LIMIT 1000",
        )
        .bind(expires_before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(upload_from_row).collect()
    }

    /// Removes an upload that was never completed, with its video (status `uploading`), in one
    /// step; false if it was completed or removed meanwhile.
    pub async fn delete_open_upload(&self, upload: &Upload) -> Result<bool> {
        let r = sqlx::query(
            "DELETE FROM videos WHERE id = $1 AND status = 'uploading' \
             AND EXISTS (SELECT 1 FROM uploads WHERE id = $2 AND state = 'open')",
        )
        .bind(upload.video_id.to_string())
        .bind(upload.id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Of `ids`, the uploads that exist, with the objects their parts name.
    pub async fn uploads_with_parts(
        &self,
        ids: &[UploadId],
    ) -> Result<std::collections::HashMap<UploadId, Vec<UploadPart>>> {
        let mut out = std::collections::HashMap::new();
        for chunk in ids.chunks(200) {
            let list = placeholders(chunk.len());
            let sql = format!("SELECT id FROM uploads WHERE id IN ({list})");
            let mut q = sqlx::query_scalar::<_, String>(&sql);
            for id in chunk {
                q = q.bind(id.to_string());
            }
            for id in q.fetch_all(&self.pool).await? {
                let id: UploadId = id.parse().map_err(|e| corrupt("uploads", e))?;
                out.insert(id, self.parts(id).await?);
            }
        }
        Ok(out)
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
            let mut tx = self.pool.begin().await?;
            // Flip first: this takes the upload's row (PostgreSQL) or the write lock (SQLite),
            // so no part PUT can change the parts between the check and the commit.
            let flipped = sqlx::query(
                "UPDATE uploads SET state = 'completed' WHERE id = $1 AND state = 'open'",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if flipped == 1 {
                let rows = sqlx::query(
                    "SELECT part_number, size, etag, object FROM upload_parts WHERE upload_id = $1",
                )
                .bind(id.to_string())
                .fetch_all(&mut *tx)
                .await?;
                let stored = rows.iter().map(part_from_row).collect::<Result<Vec<_>>>()?;
                if let Err(e) = check_parts(&upload, &stored, claimed) {
                    tx.rollback().await?;
                    return Ok(Err(e));
                }
                sqlx::query(
                    "UPDATE videos SET status = 'queued', progress = 0, updated_at = $2 WHERE id = $1",
                )
                .bind(upload.video_id.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO jobs (id, kind, video_id, state, attempts, max_attempts, run_at, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'queued', 0, $4, $5, $5, $5) ON CONFLICT (video_id, kind, chunk) DO NOTHING",
                )
                .bind(JobId::new().to_string())
                .bind(JobKind::ProcessVideo.as_str())
                .bind(upload.video_id.to_string())
                .bind(max_attempts as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            } else {
                // Completed by a concurrent call: answer as for any repeat below.
                tx.rollback().await?;
                return Box::pin(self.complete_upload(id, claimed, max_attempts, now)).await;
            }
        } else {
            // A repeated complete gets the same answer only for the same parts and ETags.
            let stored = self.parts(id).await?;
            if check_parts(&upload, &stored, claimed).is_err() {
                return Ok(Err(CompleteError::AlreadyCompleted));
            }
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
    use crate::testing::each_backend;

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
            object: Some(format!("{n}-{etag}")),
        }
    }

    #[tokio::test]
    async fn complete_checks_parts_then_enqueues_exactly_once() {
        each_backend(|db| async move {
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
            // A retried complete is harmless; one with other ETags is a conflict.
            let again = db
                .complete_upload(up.id, &claimed, 3, 7)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(again.id, v.id);
            let r = db.complete_upload(up.id, &wrong, 3, 8).await.unwrap();
            assert_eq!(r.unwrap_err(), CompleteError::AlreadyCompleted);
            let r = db.complete_upload(up.id, &[], 3, 8).await.unwrap();
            assert_eq!(r.unwrap_err(), CompleteError::AlreadyCompleted);
            // Parts are frozen once complete.
            assert_eq!(
                db.put_part(up.id, &part(1, 10, "\"z\""), 9).await.unwrap(),
                PartRecorded::UploadClosed
            );
            let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(jobs, 1);
        })
        .await;
    }

    #[tokio::test]
    async fn resent_part_replaces_and_size_must_add_up() {
        each_backend(|db| async move {
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
        })
        .await;
    }

    #[tokio::test]
    async fn unknown_part_numbers_are_named() {
        each_backend(|db| async move {
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
        })
        .await;
    }

    #[tokio::test]
    async fn a_resent_part_names_the_record_it_replaced() {
        each_backend(|db| async move {
            let (video, up) = new_upload(&db, 20, 10).await;
            assert_eq!(
                db.put_part(up.id, &part(1, 10, "a"), 1).await.unwrap(),
                PartRecorded::Stored { replaced: None }
            );
            assert_eq!(
                db.put_part(up.id, &part(1, 10, "b"), 2).await.unwrap(),
                PartRecorded::Stored {
                    replaced: Some(part(1, 10, "a"))
                }
            );
            assert_eq!(db.parts(up.id).await.unwrap(), vec![part(1, 10, "b")]);
            let found = db
                .uploads_with_parts(&[up.id, UploadId::new()])
                .await
                .unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(found[&up.id], vec![part(1, 10, "b")]);
            assert!(db.delete_video(video.id).await.unwrap());
            assert_eq!(
                db.put_part(up.id, &part(2, 10, "c"), 3).await.unwrap(),
                PartRecorded::UploadGone
            );
        })
        .await;
    }

    #[tokio::test]
    async fn expired_open_uploads_are_found_and_removed_with_their_video() {
        each_backend(|db| async move {
            let (video, up) = new_upload(&db, 10, 10).await; // expires at 10_000
            let (_, done) = new_upload(&db, 10, 10).await;
            db.put_part(done.id, &part(1, 10, "a"), 1).await.unwrap();
            db.complete_upload(done.id, &[(1, "a".into())], 3, 2)
                .await
                .unwrap()
                .unwrap();
            assert!(db.expired_uploads(10_000).await.unwrap().is_empty());
            let expired = db.expired_uploads(10_001).await.unwrap();
            assert_eq!(expired.iter().map(|u| u.id).collect::<Vec<_>>(), [up.id]);
            assert!(db.delete_open_upload(&expired[0]).await.unwrap());
            assert!(db.video(video.id).await.unwrap().is_none());
            assert!(db.upload(up.id).await.unwrap().is_none());
            assert!(!db.delete_open_upload(&expired[0]).await.unwrap());
            assert!(db.upload(done.id).await.unwrap().is_some());
        })
        .await;
    }

    #[tokio::test]
    async fn deleting_the_video_cascades() {
        each_backend(|db| async move {
            let (video, up) = new_upload(&db, 10, 10).await;
            db.put_part(up.id, &part(1, 10, "a"), 1).await.unwrap();
            assert!(db.delete_video(video.id).await.unwrap());
            assert!(db.upload(up.id).await.unwrap().is_none());
            assert!(db.parts(up.id).await.unwrap().is_empty());
            assert!(!db.delete_video(video.id).await.unwrap());
        })
        .await;
    }
}
