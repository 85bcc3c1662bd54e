//! Multipart uploads: create → signed part PUTs (any order, in parallel) → complete.
//!
//! Completion is the COMPLETED event of the design: it checks every part and ETag, and marks
//! the upload complete and enqueues processing in one transaction.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use md5::{Digest, Md5};
use oxcast_base::UploadId;
use oxcast_db::{CompleteError, NewUpload, PartRecorded, Upload, UploadPart, UploadState};
use oxcast_store::keys;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::limits::{ClientAddr, Refused};
use crate::uploads_s3;
use crate::videos::VideoView;
use crate::AppState;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateUpload {
    /// The file's name, kept for display; never used as a storage key.
    pub filename: String,
    /// Total size in bytes.
    pub size: u64,
    pub title: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartUrl {
    pub part_number: u32,
    /// Where to PUT the part's bytes; relative to this server, or an absolute presigned URL.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUpload {
    pub upload_id: String,
    pub video_id: String,
    pub part_size: u64,
    pub parts: Vec<PartUrl>,
    /// When the part URLs expire, RFC 3339.
    pub expires_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StoredPart {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UploadStatus {
    pub upload_id: String,
    pub video_id: String,
    pub size: u64,
    pub part_size: u64,
    /// `open` or `completed`.
    pub state: String,
    /// Parts already stored.
    pub parts: Vec<StoredPart>,
    /// Parts still to send, with fresh URLs.
    pub missing: Vec<PartUrl>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompletePart {
    pub part_number: u32,
    pub etag: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CompleteUpload {
    pub parts: Vec<CompletePart>,
}

fn part_urls(
    state: &AppState,
    upload: &Upload,
    numbers: impl Iterator<Item = u32>,
) -> (Vec<PartUrl>, i64) {
    let expires = state.clock.now_ms() / 1000 + state.config.upload.url_ttl_s as i64;
    let urls = numbers
        .map(|n| PartUrl {
            part_number: n,
            url: state.signer.part_url(upload.id, n, expires),
        })
        .collect();
    (urls, expires)
}

fn rfc3339(epoch_s: i64) -> String {
    crate::videos::rfc3339(epoch_s * 1000)
}

/// Start an upload.
#[utoipa::path(post, operation_id = "createUpload", path = "/api/v1/uploads", request_body = CreateUpload,
    responses((status = 201, body = CreatedUpload), (status = 400), (status = 413, description = "larger than the configured maximum")))]
pub async fn create(
    State(state): State<AppState>,
    Json(req): Json<CreateUpload>,
) -> ApiResult<Response> {
    let filename = req.filename.trim();
    if filename.is_empty() || filename.len() > 255 || filename.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "filename must be 1 to 255 printable characters".into(),
        ));
    }
    if req.size == 0 {
        return Err(ApiError::BadRequest(
            "size must be greater than zero".into(),
        ));
    }
    let max = state.config.upload.max_size;
    if req.size > max {
        return Err(ApiError::TooLarge(format!(
            "the file is {} bytes; the largest upload accepted is {max} bytes",
            req.size
        )));
    }
    let title = req
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| default_title(filename));
    if title.len() > 300 {
        return Err(ApiError::BadRequest(
            "title must be at most 300 bytes".into(),
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "title must not contain control characters (NUL, escape, newlines)".into(),
        ));
    }
    let now = state.clock.now_ms();
    let multipart = state.store.multipart();
    let mut part_size = state.config.upload.part_size.max(1);
    if multipart.is_some() {
        part_size = part_size.max(uploads_s3::MIN_PART_SIZE);
    }
    let expires_ms = now + state.config.upload.url_ttl_s as i64 * 1000;
    let (video, upload) = state
        .db
        .create_upload(
            &NewUpload {
                title: &title,
                filename,
                size: req.size,
                part_size,
                expires_at: expires_ms,
            },
            now,
        )
        .await?;
    let (parts, expires) = match multipart {
        Some(mp) => {
            let s3 = uploads_s3::start(&state, mp, &upload).await?;
            uploads_s3::part_urls(&state, mp, &s3, 1..=upload.part_count())?
        }
        None => part_urls(&state, &upload, 1..=upload.part_count()),
    };
    tracing::info!(video = %video.id, upload = %upload.id, size = req.size, parts = parts.len(),
        direct_to_bucket = multipart.is_some(), "upload created");
    metrics::counter!("oxcast_uploads_created_total").increment(1);
    Ok((
        StatusCode::CREATED,
        Json(CreatedUpload {
            upload_id: upload.id.to_string(),
            video_id: video.id.to_string(),
            part_size,
            parts,
            expires_at: rfc3339(expires),
        }),
    )
        .into_response())
}

fn default_title(filename: &str) -> String {
    let stem = match filename.rsplit_once('.') {
        Some((stem, _)) if !stem.is_empty() => stem,
        _ => filename,
    };
    stem.to_string()
}

fn parse_upload_id(s: &str) -> ApiResult<UploadId> {
    s.parse().map_err(|_| ApiError::NotFound("upload".into()))
}

/// Which parts are stored, with fresh URLs for the rest: what a client needs to resume.
#[utoipa::path(get, operation_id = "getUpload", path = "/api/v1/uploads/{upload_id}", params(("upload_id" = String, Path)),
    responses((status = 200, body = UploadStatus), (status = 404)))]
pub async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<UploadStatus>> {
    let id = parse_upload_id(&id)?;
    let upload = state
        .db
        .upload(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("upload".into()))?;
    let s3 = match state.store.multipart() {
        Some(mp) => state.db.s3_upload(id).await?.map(|s3| (mp, s3)),
        None => None,
    };
    let stored: Vec<StoredPart> = match &s3 {
        Some((mp, s3)) => uploads_s3::stored_parts(&state, mp, &upload, s3).await?,
        None => state
            .db
            .parts(id)
            .await?
            .into_iter()
            .map(|p| StoredPart {
                part_number: p.part_number,
                size: p.size,
                etag: p.etag,
            })
            .collect(),
    };
    let missing_numbers: Vec<u32> = if upload.state == UploadState::Open {
        (1..=upload.part_count())
            .filter(|n| !stored.iter().any(|p| p.part_number == *n))
            .collect()
    } else {
        Vec::new()
    };
    let (missing, _) = match &s3 {
        Some((mp, s3)) => uploads_s3::part_urls(&state, mp, s3, missing_numbers.into_iter())?,
        None => part_urls(&state, &upload, missing_numbers.into_iter()),
    };
    Ok(Json(UploadStatus {
        upload_id: upload.id.to_string(),
        video_id: upload.video_id.to_string(),
        size: upload.size,
        part_size: upload.part_size,
        state: upload.state.as_str().to_string(),
        parts: stored,
        missing,
    }))
}

#[derive(Debug, Deserialize)]
pub struct PartQuery {
    expires: Option<i64>,
    sig: Option<String>,
}

/// Receives one part. The URL's signature is the only credential.
///
/// The body streams to storage as it arrives (bounded memory whatever the part size), hashed on
/// the way, into an object of its own; only then is the part recorded, pointing at that object.
/// A part's record therefore always names bytes whose MD5 is its ETag, however many PUTs of the
/// same part race, and the object a record replaced is removed afterwards.
pub async fn put_part(
    State(state): State<AppState>,
    Path((upload_id, part_number)): Path<(String, String)>,
    Query(q): Query<PartQuery>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    match admit_part(&state, &upload_id, &part_number, q, addr, &headers).await {
        Ok(admitted) => store_part(&state, admitted, body).await,
        Err(e) => {
            drain_refused(body, &headers, state.config.upload.part_size).await;
            Err(e)
        }
    }
}

/// A part PUT that passed every check made before its body is read.
struct Admitted {
    id: UploadId,
    n: u32,
    expected: u64,
    part_size: u64,
    _permit: crate::limits::Permit,
}

/// The checks made before a part's body is read: signature, load, the upload's state, and the
/// declared length.
async fn admit_part(
    state: &AppState,
    upload_id: &str,
    part_number: &str,
    q: PartQuery,
    addr: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> ApiResult<Admitted> {
    // Anything malformed in a signed URL is a bad signature, not a hint about what exists.
    let forbidden = || ApiError::Forbidden("the part URL's signature is not valid".into());
    let id: UploadId = upload_id.parse().map_err(|_| forbidden())?;
    let n: u32 = part_number.parse().map_err(|_| forbidden())?;
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return Err(forbidden());
    };
    state
        .signer
        .verify(id, n, expires, &sig, state.clock.now_ms() / 1000)
        .map_err(|e| ApiError::Forbidden(e.to_string()))?;
    let _permit = state.part_gate.try_acquire(addr).map_err(|r| {
        let message = match r {
            Refused::Addr => "too many part uploads at once from this address; retry shortly",
            Refused::Total => "the server is receiving as many parts as it can; retry shortly",
        };
        metrics::counter!("oxcast_part_uploads_refused_total").increment(1);
        ApiError::TooManyRequests {
            message: message.into(),
            retry_after: std::time::Duration::from_secs(1),
        }
    })?;

    let upload = state
        .db
        .upload(id)
        .await?
        .ok_or_else(|| ApiError::NotFound("upload".into()))?;
    if upload.state != UploadState::Open {
        return Err(ApiError::Conflict("the upload is already complete".into()));
    }
    let expected = upload.expected_part_size(n).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "part {n} is out of range: this upload has {} parts",
            upload.part_count()
        ))
    })?;
    let part_size = upload.part_size;
    if let Some(len) = content_length(headers) {
        if len > expected {
            return Err(too_large(n, expected, part_size, len));
        }
    }
    Ok(Admitted {
        id,
        n,
        expected,
        part_size,
        _permit,
    })
}

fn too_large(n: u32, expected: u64, part_size: u64, got: u64) -> ApiError {
    ApiError::TooLarge(format!(
        "part {n} must be {expected} bytes (part_size {part_size}); got {got} or more"
    ))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads and discards the body of a refused part PUT, so the client reads the refusal.
///
/// Answering before the body is read and then closing the connection makes the client fail
/// writing the rest of the body (a broken pipe, or a reset that discards the answer) before it
/// sees the status: a browser reports a network error instead of "the upload is already
/// complete", "the URL has expired" or "retry shortly". This is the lingering close of nginx
/// and Apache, bounded: at most two parts' worth is read (a body declared larger is refused as
/// it stands), and the server's body idle timeout bounds how long a stalled one is waited for.
async fn drain_refused(body: Body, headers: &HeaderMap, max_part: u64) {
    let cap = max_part.saturating_mul(2);
    if content_length(headers).is_some_and(|len| len > cap) {
        return;
    }
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len() as u64;
        if read > cap {
            return;
        }
    }
}

/// Streams an admitted part's body to storage and records it.
async fn store_part(state: &AppState, a: Admitted, body: Body) -> ApiResult<Response> {
    let Admitted {
        id,
        n,
        expected,
        part_size,
        _permit,
    } = a;
    let object = hex::encode(rand::random::<[u8; 8]>());
    let key = keys::upload_part(id, n, Some(&object));
    let md5 = std::sync::Arc::new(std::sync::Mutex::new(Md5::new()));
    let hasher = md5.clone();
    let mut received = 0u64;
    let body = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| body_error(n, &e))?;
        received += chunk.len() as u64;
        if received > expected {
            return Err(too_large(n, expected, part_size, received));
        }
        hasher
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&chunk);
        Ok(chunk)
    });
    let size = state.store.put_stream(&key, Box::pin(body)).await??;
    let remove_new = || async {
        if let Err(e) = state.store.delete(&key).await {
            tracing::warn!(%key, error = %e, "could not remove a refused part; the reconciler will");
        }
    };
    if size != expected {
        remove_new().await;
        return Err(ApiError::BadRequest(format!(
            "part {n} must be {expected} bytes; got {size}"
        )));
    }
    let digest = std::mem::take(&mut *md5.lock().unwrap_or_else(|e| e.into_inner())).finalize();
    let etag = format!("\"{}\"", hex::encode(digest));
    let part = UploadPart {
        part_number: n,
        size,
        etag: etag.clone(),
        object: Some(object),
    };
    match state.db.put_part(id, &part, state.clock.now_ms()).await {
        Ok(PartRecorded::Stored { replaced }) => {
            if let Some(old) = replaced {
                let old_key = keys::upload_part(id, n, old.object.as_deref());
                if let Err(e) = state.store.delete(&old_key).await {
                    tracing::warn!(key = %old_key, error = %e, "could not remove a replaced part; the reconciler will");
                }
            }
        }
        Ok(PartRecorded::UploadGone) => {
            remove_new().await;
            return Err(ApiError::NotFound("upload".into()));
        }
        Ok(PartRecorded::UploadClosed) => {
            remove_new().await;
            return Err(ApiError::Conflict("the upload is already complete".into()));
        }
        Err(e) => {
            remove_new().await;
            return Err(e.into());
        }
    }
    metrics::counter!("oxcast_upload_bytes_total").increment(size);
    Ok((StatusCode::OK, [(header::ETAG, etag)]).into_response())
}

/// A body that failed mid-way: stalled past the idle timeout, or the client went away.
fn body_error(n: u32, e: &axum::Error) -> ApiError {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::Timeout(format!(
                "part {n}: the body stopped arriving; send the part again"
            ));
        }
        source = s.source();
    }
    ApiError::BadRequest(format!("reading part {n}: {e}"))
}

/// Finish an upload: every part must be stored with the ETag given here.
#[utoipa::path(post, operation_id = "completeUpload", path = "/api/v1/uploads/{upload_id}/complete", params(("upload_id" = String, Path)),
    request_body = CompleteUpload,
    responses((status = 202, body = VideoView), (status = 400, description = "names the missing or mismatched parts"), (status = 404),
        (status = 409, description = "already completed with other parts or ETags")))]
pub async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<CompleteUpload>,
) -> ApiResult<Response> {
    let id = parse_upload_id(&id)?;
    let claimed: Vec<(u32, String)> = req
        .parts
        .into_iter()
        .map(|p| (p.part_number, p.etag))
        .collect();
    // Straight-to-bucket uploads: the bucket's half first (check, record, complete the object).
    if let Some(mp) = state.store.multipart() {
        if let (Some(upload), Some(s3)) =
            (state.db.upload(id).await?, state.db.s3_upload(id).await?)
        {
            if upload.state == UploadState::Open {
                if let Err(e) = uploads_s3::complete(&state, mp, &upload, &s3, &claimed).await? {
                    return Err(ApiError::BadRequest(e.to_string()));
                }
            }
        }
    }
    let now = state.clock.now_ms();
    let video = match state
        .db
        .complete_upload(id, &claimed, state.config.worker.max_attempts, now)
        .await?
    {
        Ok(v) => v,
        Err(CompleteError::NotFound) => return Err(ApiError::NotFound("upload".into())),
        Err(e @ CompleteError::AlreadyCompleted) => return Err(ApiError::Conflict(e.to_string())),
        Err(e) => return Err(ApiError::BadRequest(e.to_string())),
    };
    tracing::info!(video = %video.id, upload = %id, "upload completed; processing queued");
    state.wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(VideoView::with_base(
            &video,
            state.config.public_base_url.as_deref(),
        )),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_title_drops_the_extension() {
        assert_eq!(default_title("holiday.mp4"), "holiday");
        assert_eq!(default_title(".mp4"), ".mp4");
        assert_eq!(default_title("noext"), "noext");
        assert_eq!(default_title("a.b.mov"), "a.b");
    }
}
