//! What the VOD origin keeps in memory so that a segment or playlist of a ready video is served
//! without a database query or a `stat`:
//!
//! - which videos are ready, each answer kept for [`READY_TTL`] and dropped at once when this
//!   node deletes the video; other API nodes see a deletion within that TTL;
//! - each object's metadata (size, ETag, date) as response headers, and the bytes of small
//!   objects (playlists, MPDs, init segments, posters) with their compressed forms.
//!
//! Everything under `/v/{video}/` is immutable once the video is ready (a re-encode is a new
//! video), so a cached object never needs revalidating; the ready check in front of it is what
//! makes a deleted video disappear.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use oxcast_base::VideoId;
use oxcast_db::{Db, VideoStatus};
use oxcast_store::{keys, Meta, Store};

use oxcast_media::compress::Compressible;

/// How long "this video is ready" is believed before the database is asked again.
pub const READY_TTL: Duration = Duration::from_secs(1);

/// One object as the origin serves it.
#[derive(Debug)]
pub struct CachedObject {
    pub size: u64,
    pub etag: Option<HeaderValue>,
    /// The ETag as the client would quote it, for `If-None-Match` and `If-Range`.
    pub etag_text: Option<String>,
    pub last_modified: HeaderValue,
    pub last_modified_text: String,
    /// The whole object, for small ones.
    pub body: Option<Compressible>,
}

impl CachedObject {
    fn new(meta: &Meta, body: Option<Bytes>) -> Self {
        let etag_text = meta.etag.as_deref().map(quote_etag);
        let last_modified_text = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + Duration::from_secs(meta.last_modified.max(0) as u64),
        );
        Self {
            size: meta.size,
            etag: etag_text
                .as_deref()
                .and_then(|e| HeaderValue::from_str(e).ok()),
            etag_text,
            last_modified: HeaderValue::from_str(&last_modified_text)
                .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")),
            last_modified_text,
            body: body.map(Compressible::new),
        }
    }

    fn weight(&self) -> u32 {
        let body = self.body.as_ref().map_or(0, Compressible::weight);
        u32::try_from(body + 256).unwrap_or(u32::MAX)
    }
}

fn quote_etag(e: &str) -> String {
    if e.starts_with('"') || e.starts_with("W/") {
        e.to_string()
    } else {
        format!("\"{e}\"")
    }
}

/// Why an object cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum Miss {
    #[error("not found")]
    NotFound,
    /// The database or the store failed; the text says which and why.
    #[error("{0}")]
    Failed(String),
}

/// A lookup's failure, shared by every request that waited on the same lookup.
#[derive(Debug, thiserror::Error)]
enum Lookup {
    #[error("not found")]
    NotFound,
    #[error("database: {0}")]
    Db(#[from] oxcast_db::Error),
    #[error("storage: {0}")]
    Store(#[from] oxcast_store::Error),
}

impl From<Arc<Lookup>> for Miss {
    fn from(e: Arc<Lookup>) -> Self {
        match &*e {
            Lookup::NotFound => Miss::NotFound,
            other => Miss::Failed(other.to_string()),
        }
    }
}

#[derive(Clone)]
pub struct OriginCache {
    ready: moka::future::Cache<VideoId, ()>,
    objects: moka::future::Cache<String, Arc<CachedObject>>,
    small_object: u64,
}

impl OriginCache {
    /// `capacity` bytes of objects; objects up to `small_object` bytes are kept whole.
    pub fn new(capacity: u64, small_object: u64) -> Self {
        Self {
            ready: moka::future::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_live(READY_TTL)
                .build(),
            objects: moka::future::Cache::builder()
                .max_capacity(capacity)
                .weigher(|_, v: &Arc<CachedObject>| v.weight())
                .build(),
            small_object,
        }
    }

    /// Whether `video` is ready. Concurrent checks of the same video share one query; only a
    /// "ready" answer is remembered, so a video becomes playable the moment it is ready.
    pub async fn ready(&self, db: &Db, video: VideoId) -> Result<(), Miss> {
        // A plain lookup first: cheaper than the loading path when the answer is cached.
        if self.ready.get(&video).await.is_some() {
            return Ok(());
        }
        self.ready
            .try_get_with(video, async move {
                match db.video(video).await? {
                    Some(v) if v.status == VideoStatus::Ready => Ok(()),
                    _ => Err(Lookup::NotFound),
                }
            })
            .await
            .map_err(Miss::from)
    }

    /// Stops serving `video` on this node now (it was deleted or changed).
    pub async fn forget(&self, video: VideoId) {
        self.ready.invalidate(&video).await;
    }

    /// The object `name` of `video`, with its bytes when it is small. `name` comes from the
    /// request: it is checked (and the store key built) only when it is not cached, and only
    /// objects that exist are cached.
    pub async fn object(
        &self,
        store: &Store,
        video: VideoId,
        name: &str,
    ) -> Result<Arc<CachedObject>, Miss> {
        let id = format!("{video}/{name}");
        if let Some(o) = self.objects.get(&id).await {
            return Ok(o);
        }
        let key = keys::video_object(video, name).map_err(|_| Miss::NotFound)?;
        let small = self.small_object;
        self.objects
            .try_get_with(id, async move {
                let meta = store.head(&key).await?.ok_or(Lookup::NotFound)?;
                let body = if meta.size <= small {
                    Some(store.get_bytes(&key).await?)
                } else {
                    None
                };
                Ok::<_, Lookup>(Arc::new(CachedObject::new(&meta, body)))
            })
            .await
            .map_err(Miss::from)
    }
}
