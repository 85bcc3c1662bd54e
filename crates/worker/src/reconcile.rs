//! The reconciler: stored bytes that nothing in the database owns any more are removed.
//!
//! Deletes, crashes and races leave bytes behind: a video deleted mid-encode, a part PUT that
//! lost a race with a delete, a part replaced by a re-sent one, a write killed half way (local
//! staging files), an upload never completed. Each pass compares the store with the database
//! and removes what has no owner, but only once it is older than a grace period, because a
//! write's object lands a moment before its database record. Passes are idempotent and cheap:
//! one listing per prefix and one batched query per 200 ids.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use oxcast_base::{UploadId, VideoId};
use oxcast_store::{keys, Key};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::runner::WorkerContext;
use crate::Result;

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reconciled {
    pub expired_uploads: u64,
    pub objects: u64,
    pub bytes: u64,
    pub staging_files: u64,
    pub folders: u64,
}

impl Reconciled {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Runs a pass now and then every `reconcile.interval_s` until `shutdown`.
pub async fn run_reconciler(ctx: Arc<WorkerContext>, shutdown: CancellationToken) {
    let every = ctx.config.reconcile.interval_s;
    if every <= 0.0 {
        return;
    }
    let every = Duration::from_secs_f64(every);
    loop {
        let span = tracing::info_span!("reconcile");
        match reconcile_once(&ctx).instrument(span).await {
            Ok(r) if !r.is_empty() => tracing::info!(?r, "reconciler removed unowned data"),
            Ok(_) => tracing::debug!("reconciler: nothing to remove"),
            Err(e) => tracing::warn!(error = %e, "reconciler pass failed; will retry"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One pass over uploads, videos and (local store) staging files.
pub async fn reconcile_once(ctx: &WorkerContext) -> Result<Reconciled> {
    let cfg = &ctx.config.reconcile;
    let now_ms = ctx.clock.now_ms();
    let cutoff_s = (now_ms as f64 / 1000.0 - cfg.grace_s) as i64;
    let mut out = Reconciled::default();

    // Uploads whose URLs died long ago and that nobody completed go, with their video.
    let margin_ms = (cfg.upload_expiry_margin_s * 1000.0) as i64;
    for upload in ctx.db.expired_uploads(now_ms - margin_ms).await? {
        // In S3 mode the parts sit in the bucket's multipart upload: abort it first (read
        // before the row goes; the bucket's lifecycle rule is the backstop if this fails).
        let s3 = ctx.db.s3_upload(upload.id).await?;
        if ctx.db.delete_open_upload(&upload).await? {
            if let (Some(s3), Some(mp)) = (s3, ctx.store.multipart()) {
                if let Err(e) = mp.abort(&s3.object_key, &s3.multipart_id, now_ms).await {
                    tracing::warn!(upload = %upload.id, error = %e, "could not abort an expired multipart upload");
                }
            }
            tracing::info!(upload = %upload.id, video = %upload.video_id, "expired upload removed");
            out.expired_uploads += 1;
        }
    }

    // Parts: an upload's folder keeps exactly the objects its part records name.
    let dirs = ctx.store.list_dirs(&Key::from("uploads")).await?;
    let ids: Vec<UploadId> = dirs.iter().filter_map(|d| d.parse().ok()).collect();
    let owned = ctx.db.uploads_with_parts(&ids).await?;
    for dir in &dirs {
        let prefix = Key::from(format!("uploads/{dir}"));
        // An upload folder keeps the objects its part records name; without a record, nothing.
        let keep: HashSet<String> = dir
            .parse::<UploadId>()
            .ok()
            .and_then(|id| owned.get(&id).map(|parts| (id, parts)))
            .map(|(id, parts)| {
                parts
                    .iter()
                    .map(|p| keys::upload_part(id, p.part_number, p.object.as_deref()).to_string())
                    .collect()
            })
            .unwrap_or_default();
        remove_unowned(ctx, &prefix, &keep, cutoff_s, "upload_part", &mut out).await?;
    }

    // Sources sent straight to a bucket: one object per upload, kept while the upload exists.
    let sources = ctx.store.list(&Key::from("sources")).await?;
    let ids: Vec<UploadId> = sources
        .iter()
        .filter_map(|m| m.key.strip_prefix("sources/")?.parse().ok())
        .collect();
    let owned = ctx.db.uploads_with_parts(&ids).await?;
    for obj in sources {
        let owner = obj
            .key
            .strip_prefix("sources/")
            .and_then(|id| id.parse::<UploadId>().ok());
        if owner.is_some_and(|id| owned.contains_key(&id)) || obj.last_modified > cutoff_s {
            continue;
        }
        ctx.store.delete(&Key::from(obj.key.clone())).await?;
        metrics::counter!("oxcast_reconcile_removed_objects_total", "kind" => "source")
            .increment(1);
        out.objects += 1;
        out.bytes += obj.size;
    }

    // Outputs: a video's folder exists only while its row does.
    let dirs = ctx.store.list_dirs(&Key::from("videos")).await?;
    let ids: Vec<VideoId> = dirs.iter().filter_map(|d| d.parse().ok()).collect();
    let live = ctx.db.existing_videos(&ids).await?;
    for dir in &dirs {
        if dir.parse::<VideoId>().is_ok_and(|id| live.contains(&id)) {
            continue;
        }
        let prefix = Key::from(format!("videos/{dir}"));
        remove_unowned(
            ctx,
            &prefix,
            &HashSet::new(),
            cutoff_s,
            "video_output",
            &mut out,
        )
        .await?;
    }

    let (files, bytes, folders) = ctx.store.sweep_local(cfg.grace_s.max(0.0) as u64).await?;
    metrics::counter!("oxcast_reconcile_removed_objects_total", "kind" => "staging")
        .increment(files);
    out.staging_files += files;
    out.bytes += bytes;
    out.folders += folders;
    metrics::counter!("oxcast_reconcile_removed_bytes_total").increment(out.bytes);
    metrics::counter!("oxcast_reconcile_expired_uploads_total").increment(out.expired_uploads);
    metrics::counter!("oxcast_reconcile_passes_total").increment(1);
    Ok(out)
}

async fn remove_unowned(
    ctx: &WorkerContext,
    prefix: &Key,
    keep: &HashSet<String>,
    cutoff_s: i64,
    kind: &'static str,
    out: &mut Reconciled,
) -> Result<()> {
    for obj in ctx.store.list(prefix).await? {
        if keep.contains(&obj.key) || obj.last_modified > cutoff_s {
            continue;
        }
        ctx.store.delete(&Key::from(obj.key.clone())).await?;
        tracing::debug!(key = %obj.key, size = obj.size, "removed unowned object");
        metrics::counter!("oxcast_reconcile_removed_objects_total", "kind" => kind).increment(1);
        out.objects += 1;
        out.bytes += obj.size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use oxcast_base::clock::{ManualClock, SharedClock};
    use oxcast_base::Config;
    use oxcast_db::{Db, NewUpload, UploadPart};
    use oxcast_store::Store;

    async fn ctx(dir: &std::path::Path, clock: SharedClock) -> WorkerContext {
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", dir.join("db").display()))
            .await
            .unwrap();
        let mut config = Config::default();
        config.reconcile.grace_s = 60.0;
        config.reconcile.upload_expiry_margin_s = 10.0;
        WorkerContext {
            db,
            store: Store::local(&dir.join("objects")).unwrap(),
            config: Arc::new(config),
            clock,
            node_id: "n".into(),
            scratch: dir.join("work"),
            wake: Default::default(),
        }
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    #[tokio::test]
    async fn removes_only_what_no_row_owns_and_only_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(now_ms()));
        let ctx = ctx(dir.path(), clock.clone()).await;
        let put = |k: Key| {
            let store = ctx.store.clone();
            async move { store.put(&k, Bytes::from_static(b"data")).await.unwrap() }
        };
        let new = |expires_at| NewUpload {
            title: "t",
            filename: "f.mp4",
            size: 4,
            part_size: 4,
            expires_at,
        };
        // A live upload with its current part and one it replaced.
        let (video, up) = ctx
            .db
            .create_upload(&new(now_ms() + 3_600_000), 1)
            .await
            .unwrap();
        let part = UploadPart {
            part_number: 1,
            size: 4,
            etag: "e".into(),
            object: Some("cur".into()),
        };
        ctx.db.put_part(up.id, &part, 1).await.unwrap();
        put(keys::upload_part(up.id, 1, Some("cur"))).await;
        put(keys::upload_part(up.id, 1, Some("old"))).await;
        put(keys::video_object(video.id, "master.m3u8").unwrap()).await;
        // Outputs of a deleted video, and parts of a deleted upload.
        let gone = VideoId::new();
        put(keys::video_object(gone, "720p/seg-1.m4s").unwrap()).await;
        put(keys::upload_part(UploadId::new(), 1, Some("x"))).await;
        // A source object whose upload is gone.
        put(keys::upload_source(UploadId::new())).await;
        // An upload nobody completed, expired long ago.
        let (stale_video, stale) = ctx.db.create_upload(&new(1), 1).await.unwrap();
        put(keys::upload_part(stale.id, 1, Some("s"))).await;

        // Within the grace period nothing is touched, but the expired upload's rows go.
        let r = reconcile_once(&ctx).await.unwrap();
        assert_eq!(r.expired_uploads, 1);
        assert_eq!(r.objects, 0);
        assert!(ctx.db.video(stale_video.id).await.unwrap().is_none());

        clock.advance(61_000);
        let r = reconcile_once(&ctx).await.unwrap();
        assert_eq!(r.objects, 5, "{r:?}");
        let left: Vec<String> = ctx
            .store
            .list(&Key::from(""))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(
            left,
            [
                keys::upload_part(up.id, 1, Some("cur")).to_string(),
                keys::video_object(video.id, "master.m3u8")
                    .unwrap()
                    .to_string(),
            ]
        );
        // Idempotent.
        assert_eq!(reconcile_once(&ctx).await.unwrap().objects, 0);
    }
}
