//! Uploads straight to an S3 bucket: the API runs the multipart upload (create, list, complete)
//! and hands out presigned UploadPart URLs; the part bytes never pass through this process.
//!
//! The bucket is the record of which parts are stored (ListParts). At completion the listed
//! parts are checked against the client's list, copied into the database's part records, the
//! bucket completes the object, and then the database's completion (one transaction, enqueues
//! exactly once) runs as in embedded mode. Two API nodes completing the same upload at once
//! both get there: the bucket completes once and answers the other with NoSuchUpload, which is
//! accepted when the object is there with the declared size.

use std::time::Duration;

use oxcast_db::{CompleteError, S3Upload, Upload, UploadPart};
use oxcast_store::{keys, Completed, ListedPart, S3Multipart};

use crate::error::{ApiError, ApiResult};
use crate::uploads::{PartUrl, StoredPart};
use crate::AppState;

/// S3's smallest part (all but the last); a smaller configured part size is raised to it.
pub(crate) const MIN_PART_SIZE: u64 = 5 << 20;

fn unavailable(e: oxcast_store::Error) -> ApiError {
    tracing::warn!(error = %e, "the bucket did not answer an upload request");
    ApiError::Unavailable {
        message: "the storage bucket is not answering; retry shortly".into(),
        retry_after: Duration::from_secs(2),
    }
}

/// Starts the bucket's multipart upload for a freshly created upload. If that fails the upload
/// is removed again, so no upload exists without its multipart upload.
pub(crate) async fn start(
    state: &AppState,
    mp: &S3Multipart,
    upload: &Upload,
) -> ApiResult<S3Upload> {
    let key = keys::upload_source(upload.id).to_string();
    let created = mp.create(&key, state.clock.now_ms()).await;
    let multipart_id = match created {
        Ok(id) => id,
        Err(e) => {
            let _ = state.db.delete_open_upload(upload).await;
            return Err(unavailable(e));
        }
    };
    let s3 = S3Upload {
        object_key: key,
        multipart_id,
    };
    if let Err(e) = state.db.insert_s3_upload(upload.id, &s3).await {
        let _ = mp
            .abort(&s3.object_key, &s3.multipart_id, state.clock.now_ms())
            .await;
        let _ = state.db.delete_open_upload(upload).await;
        return Err(e.into());
    }
    Ok(s3)
}

/// Presigned UploadPart URLs for `numbers`, valid for the configured TTL from now.
pub(crate) fn part_urls(
    state: &AppState,
    mp: &S3Multipart,
    s3: &S3Upload,
    numbers: impl Iterator<Item = u32>,
) -> ApiResult<(Vec<PartUrl>, i64)> {
    let now = state.clock.now_ms();
    let ttl = state.config.upload.url_ttl_s;
    let urls = numbers
        .map(|n| {
            let url = mp.presign_part(
                &s3.object_key,
                &s3.multipart_id,
                n,
                now,
                Duration::from_secs(ttl),
            )?;
            Ok(PartUrl {
                part_number: n,
                url: url.to_string(),
            })
        })
        .collect::<Result<Vec<_>, oxcast_store::Error>>()?;
    Ok((urls, now / 1000 + ttl as i64))
}

/// The parts stored so far: the bucket's list while the upload is open, the database's record
/// once it is complete (the bucket then no longer lists them).
pub(crate) async fn stored_parts(
    state: &AppState,
    mp: &S3Multipart,
    upload: &Upload,
    s3: &S3Upload,
) -> ApiResult<Vec<StoredPart>> {
    if upload.state == oxcast_db::UploadState::Open {
        let listed = mp
            .list_parts(&s3.object_key, &s3.multipart_id, state.clock.now_ms())
            .await
            .map_err(unavailable)?;
        if let Some(listed) = listed {
            return Ok(listed
                .into_iter()
                .filter(|p| (1..=upload.part_count()).contains(&p.part_number))
                .map(|p| StoredPart {
                    part_number: p.part_number,
                    size: p.size,
                    etag: p.etag,
                })
                .collect());
        }
    }
    Ok(state
        .db
        .parts(upload.id)
        .await?
        .into_iter()
        .map(|p| StoredPart {
            part_number: p.part_number,
            size: p.size,
            etag: p.etag,
        })
        .collect())
}

/// The bucket's half of completing an open upload: check the listed parts against `claimed`,
/// record them, and complete the object. The database's completion follows in the caller.
pub(crate) async fn complete(
    state: &AppState,
    mp: &S3Multipart,
    upload: &Upload,
    s3: &S3Upload,
    claimed: &[(u32, String)],
) -> ApiResult<Result<(), CompleteError>> {
    let now = state.clock.now_ms();
    let listed = mp
        .list_parts(&s3.object_key, &s3.multipart_id, now)
        .await
        .map_err(unavailable)?;
    let Some(listed) = listed else {
        // Completed by a concurrent call (another API node), or aborted.
        return object_is_complete(state, upload, s3).await;
    };
    let etags = match check_listed(upload, &listed, claimed) {
        Ok(e) => e,
        // A listing taken while another API node completes the same upload can come back
        // short (SeaweedFS lists no parts mid-completion): the upload is done if the object is.
        Err(e) => {
            return match object_is_complete(state, upload, s3).await {
                Ok(Ok(())) => Ok(Ok(())),
                _ => Ok(Err(e)),
            }
        }
    };
    for p in &listed {
        let part = UploadPart {
            part_number: p.part_number,
            size: p.size,
            etag: p.etag.clone(),
            object: None,
        };
        state.db.put_part(upload.id, &part, now).await?;
    }
    match mp
        .complete(&s3.object_key, &s3.multipart_id, &etags, now)
        .await
        .map_err(unavailable)?
    {
        Completed::Done => Ok(Ok(())),
        Completed::NoSuchUpload => object_is_complete(state, upload, s3).await,
    }
}

async fn object_is_complete(
    state: &AppState,
    upload: &Upload,
    s3: &S3Upload,
) -> ApiResult<Result<(), CompleteError>> {
    let meta = state
        .store
        .head(&oxcast_store::Key::from(s3.object_key.as_str()))
        .await
        .map_err(unavailable)?;
    match meta {
        Some(m) if m.size == upload.size => Ok(Ok(())),
        _ => Err(ApiError::Conflict(
            "the bucket no longer holds this upload (aborted or expired); start a new upload"
                .into(),
        )),
    }
}

/// Checks what the bucket lists against what the client claims; returns the ETags of parts
/// `1..=count` in order, for CompleteMultipartUpload.
pub(crate) fn check_listed(
    upload: &Upload,
    listed: &[ListedPart],
    claimed: &[(u32, String)],
) -> Result<Vec<String>, CompleteError> {
    let count = upload.part_count();
    let unknown: Vec<u32> = claimed
        .iter()
        .map(|c| c.0)
        .filter(|&n| n == 0 || n > count)
        .collect();
    if !unknown.is_empty() {
        return Err(CompleteError::UnknownParts(unknown));
    }
    let find = |n: u32| listed.iter().find(|p| p.part_number == n);
    let missing: Vec<u32> = (1..=count)
        .filter(|&n| find(n).is_none() || !claimed.iter().any(|c| c.0 == n))
        .collect();
    if !missing.is_empty() {
        return Err(CompleteError::MissingParts(missing));
    }
    let norm = |e: &str| e.trim().trim_matches('"').to_ascii_lowercase();
    let mut mismatched: Vec<u32> = claimed
        .iter()
        .filter(|(n, etag)| find(*n).is_none_or(|p| norm(&p.etag) != norm(etag)))
        .map(|c| c.0)
        .collect();
    if !mismatched.is_empty() {
        mismatched.sort_unstable();
        mismatched.dedup();
        return Err(CompleteError::EtagMismatch(mismatched));
    }
    // Part sizes are the bucket's business (it refuses parts under 5 MiB but the last); what
    // the worker relies on is the total.
    let stored: u64 = (1..=count).filter_map(find).map(|p| p.size).sum();
    if stored != upload.size {
        return Err(CompleteError::SizeMismatch {
            stored,
            declared: upload.size,
        });
    }
    Ok((1..=count)
        .filter_map(find)
        .map(|p| p.etag.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcast_base::{UploadId, VideoId};

    fn upload(size: u64, part_size: u64) -> Upload {
        Upload {
            id: UploadId::new(),
            video_id: VideoId::new(),
            size,
            part_size,
            state: oxcast_db::UploadState::Open,
            created_at: 0,
            expires_at: 0,
        }
    }

    fn listed(n: u32, size: u64, etag: &str) -> ListedPart {
        ListedPart {
            part_number: n,
            size,
            etag: format!("\"{etag}\""),
        }
    }

    fn claim(parts: &[(u32, &str)]) -> Vec<(u32, String)> {
        parts.iter().map(|(n, e)| (*n, e.to_string())).collect()
    }

    #[test]
    fn listed_parts_are_checked_against_the_claim() {
        let up = upload(25, 10);
        let l = [listed(2, 10, "b"), listed(1, 10, "a"), listed(3, 5, "c")];
        // ETags compare without quotes or case; the result is in part order, as S3 gave them.
        assert_eq!(
            check_listed(&up, &l, &claim(&[(3, "C"), (1, "\"a\""), (2, "b")])).unwrap(),
            ["\"a\"", "\"b\"", "\"c\""]
        );
        assert_eq!(
            check_listed(&up, &l[..2], &claim(&[(1, "a"), (2, "b"), (3, "c")])),
            Err(CompleteError::MissingParts(vec![3]))
        );
        assert_eq!(
            check_listed(&up, &l, &claim(&[(1, "a"), (2, "b")])),
            Err(CompleteError::MissingParts(vec![3]))
        );
        assert_eq!(
            check_listed(&up, &l, &claim(&[(1, "a"), (2, "x"), (3, "c")])),
            Err(CompleteError::EtagMismatch(vec![2]))
        );
        assert_eq!(
            check_listed(&up, &l, &claim(&[(1, "a"), (2, "b"), (3, "c"), (4, "d")])),
            Err(CompleteError::UnknownParts(vec![4]))
        );
        let short = [listed(1, 10, "a"), listed(2, 9, "b"), listed(3, 5, "c")];
        assert_eq!(
            check_listed(&up, &short, &claim(&[(1, "a"), (2, "b"), (3, "c")])),
            Err(CompleteError::SizeMismatch {
                stored: 24,
                declared: 25
            })
        );
    }
}
