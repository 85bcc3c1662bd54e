//! The S3 multipart upload behind an upload, in S3 mode (parts go straight to the bucket).

use oxcast_base::UploadId;
use sqlx::Row;

use crate::{Db, Result};

/// Where an upload's bytes go in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Upload {
    /// The object the completed upload becomes.
    pub object_key: String,
    /// The bucket's multipart upload id.
    pub multipart_id: String,
}

impl Db {
    pub async fn insert_s3_upload(&self, upload: UploadId, s3: &S3Upload) -> Result<()> {
        sqlx::query(
            "INSERT INTO s3_uploads (upload_id, object_key, multipart_id) VALUES ($1, $2, $3)",
        )
        .bind(upload.to_string())
        .bind(&s3.object_key)
        .bind(&s3.multipart_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `None` for an upload whose parts came through the server (embedded mode).
    pub async fn s3_upload(&self, upload: UploadId) -> Result<Option<S3Upload>> {
        let row =
            sqlx::query("SELECT object_key, multipart_id FROM s3_uploads WHERE upload_id = $1")
                .bind(upload.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(S3Upload {
                object_key: r.try_get("object_key")?,
                multipart_id: r.try_get("multipart_id")?,
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewUpload;

    #[tokio::test]
    async fn s3_upload_is_kept_and_goes_with_its_video() {
        let (db, _d) = crate::testing::sqlite().await;
        let new = NewUpload {
            title: "t",
            filename: "f.mp4",
            size: 10,
            part_size: 10,
            expires_at: 10_000,
        };
        let (video, up) = db.create_upload(&new, 1).await.unwrap();
        assert_eq!(db.s3_upload(up.id).await.unwrap(), None);
        let s3 = S3Upload {
            object_key: format!("sources/{}", up.id),
            multipart_id: "mp-1".into(),
        };
        db.insert_s3_upload(up.id, &s3).await.unwrap();
        assert_eq!(db.s3_upload(up.id).await.unwrap(), Some(s3.clone()));
        assert!(db.insert_s3_upload(up.id, &s3).await.is_err());
        assert!(db.delete_video(video.id).await.unwrap());
        assert_eq!(db.s3_upload(up.id).await.unwrap(), None);
    }
}
