//! Object storage for oxcast.
//!
//! Every byte the platform keeps — upload parts, sources, segments, manifests, posters — goes
//! through [`Store`], a thin layer over the `object_store` crate so the same code runs on the
//! local filesystem (embedded default), in memory (tests) and on S3-compatible servers.
//!
//! Keys are built only by the functions in [`keys`] from typed IDs and fixed names; nothing a
//! user sends becomes part of a key without passing [`keys::video_object`]'s whitelist.

pub mod keys;
mod local_read;
mod open;
pub mod s3;

pub use s3::{Completed, ListedPart, S3Multipart, S3Settings};

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
pub use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("invalid object name {0:?}")]
    InvalidName(String),
    #[error("range {start}..{end} not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { start: u64, end: u64, size: u64 },
    #[error("object store: {0}")]
    Backend(#[source] object_store::Error),
    /// The storage configuration cannot work as given.
    #[error("storage configuration: {0}")]
    Config(String),
    /// A request to an S3 bucket failed; `store` names the bucket and endpoint (never a key).
    #[error("{store}: {op} failed: {detail}")]
    S3 {
        store: String,
        op: &'static str,
        /// The S3 error code (`NoSuchUpload`, `AccessDenied`, …) when the server sent one.
        code: Option<String>,
        detail: String,
    },
    #[error("io on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::NotFound(path),
            other => Error::Backend(other),
        }
    }
}

/// What is known of a stored object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
    /// Seconds since the epoch.
    pub last_modified: i64,
}

impl From<object_store::ObjectMeta> for Meta {
    fn from(m: object_store::ObjectMeta) -> Self {
        Self {
            key: m.location.to_string(),
            size: m.size,
            etag: m.e_tag,
            last_modified: m.last_modified.timestamp(),
        }
    }
}

/// An object being read: its metadata, the byte range served and the bytes.
pub struct Object {
    pub meta: Meta,
    pub range: Range<u64>,
    pub body: BoxStream<'static, Result<Bytes>>,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Set for the local filesystem backend, whose objects ffmpeg can read in place.
    local: Option<Arc<LocalFileSystem>>,
    /// Set for an S3 bucket: multipart uploads with presigned part URLs.
    multipart: Option<Arc<S3Multipart>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.inner)
    }
}

impl Store {
    /// Objects as files under `root` (created if missing).
    pub fn local(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            path: root.display().to_string(),
            source,
        })?;
        let fs = Arc::new(LocalFileSystem::new_with_prefix(root)?);
        Ok(Self {
            inner: fs.clone(),
            local: Some(fs),
            multipart: None,
        })
    }

    pub fn memory() -> Self {
        Self::from_object_store(Arc::new(InMemory::new()))
    }

    pub fn from_object_store(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            local: None,
            multipart: None,
        }
    }

    /// The bucket's multipart operations, when this store is an S3 bucket: uploads then go
    /// straight to it through presigned part URLs.
    pub fn multipart(&self) -> Option<&S3Multipart> {
        self.multipart.as_deref()
    }

    /// `local`, `s3` or `other`: the label of this store's byte counters.
    pub fn backend(&self) -> &'static str {
        if self.local.is_some() {
            "local"
        } else if self.multipart.is_some() {
            "s3"
        } else {
            "other"
        }
    }

    fn wrote(&self, n: u64) {
        metrics::counter!("oxcast_store_bytes_written_total", "backend" => self.backend())
            .increment(n);
    }

    fn read(backend: &'static str, n: u64) {
        metrics::counter!("oxcast_store_bytes_read_total", "backend" => backend).increment(n);
    }

    /// Where an object lives on disk, for the local backend: lets a reader use the file in
    /// place instead of copying it. `None` for remote backends.
    pub fn local_path(&self, key: &Key) -> Option<std::path::PathBuf> {
        self.local.as_ref()?.path_to_filesystem(key).ok()
    }

    pub async fn put(&self, key: &Key, data: Bytes) -> Result<Meta> {
        let size = data.len() as u64;
        let r = self.inner.put(key, PutPayload::from_bytes(data)).await?;
        self.wrote(size);
        Ok(Meta {
            key: key.to_string(),
            size,
            etag: r.e_tag,
            last_modified: 0,
        })
    }

    /// Streams a local file into the store in parts, so large files never sit in memory.
    pub async fn put_file(&self, key: &Key, path: &Path) -> Result<u64> {
        let io = |source| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let size = tokio::fs::metadata(path).await.map_err(io)?.len();
        if size <= 16 << 20 {
            let data = tokio::fs::read(path).await.map_err(io)?;
            self.put(key, Bytes::from(data)).await?;
            return Ok(size);
        }
        let mut upload = self.inner.put_multipart(key).await?;
        let mut file = tokio::fs::File::open(path).await.map_err(io)?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = read_full(&mut file, &mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            if let Err(e) = upload.put_part(PutPayload::from(buf[..n].to_vec())).await {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        }
        upload.complete().await?;
        self.wrote(size);
        Ok(size)
    }

    /// Stores a stream of unknown length with bounded memory: chunks are written as they come
    /// (coalesced to at most [`STREAM_CHUNK`] bytes, or the backend's minimum part size) and the
    /// object appears only when the stream ends cleanly. An error from the stream, or the future
    /// being dropped, leaves no object behind.
    pub async fn put_stream<E>(
        &self,
        key: &Key,
        mut body: impl futures::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
    ) -> Result<std::result::Result<u64, E>> {
        // S3 parts other than the last must be at least 5 MiB; the local backend takes any size.
        let chunk = if self.local.is_some() {
            STREAM_CHUNK
        } else {
            5 << 20
        };
        let mut upload = self.inner.put_multipart(key).await?;
        let mut buf = bytes::BytesMut::new();
        let mut total = 0u64;
        loop {
            match body.next().await {
                Some(Ok(data)) => {
                    total += data.len() as u64;
                    buf.extend_from_slice(&data);
                    if buf.len() >= chunk {
                        let part = buf.split().freeze();
                        if let Err(e) = upload.put_part(PutPayload::from(part)).await {
                            let _ = upload.abort().await;
                            return Err(e.into());
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = upload.abort().await;
                    return Ok(Err(e));
                }
                None => break,
            }
        }
        if !buf.is_empty() {
            if let Err(e) = upload.put_part(PutPayload::from(buf.freeze())).await {
                let _ = upload.abort().await;
                return Err(e.into());
            }
        }
        upload.complete().await?;
        self.wrote(total);
        Ok(Ok(total))
    }

    /// The names directly under `prefix` that have objects below them (one level, like `ls`).
    pub async fn list_dirs(&self, prefix: &Key) -> Result<Vec<String>> {
        let listed = self.inner.list_with_delimiter(Some(prefix)).await?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .into_iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Local backend only: removes what crashed writes left (object_store's `name#N` staging
    /// files, invisible to listings) once older than `older_than_s`, and empty folders. Returns
    /// (files removed, bytes removed, folders removed); a remote backend returns zeros, its
    /// incomplete multipart uploads being the bucket's lifecycle rule's job.
    pub async fn sweep_local(&self, older_than_s: u64) -> Result<(u64, u64, u64)> {
        let Some(root) = self
            .local_path(&Key::from("x"))
            .and_then(|p| p.parent().map(Path::to_path_buf))
        else {
            return Ok((0, 0, 0));
        };
        tokio::task::spawn_blocking(move || sweep_dir(&root, older_than_s, true))
            .await
            .map_err(|e| Error::Io {
                path: "sweep".into(),
                source: std::io::Error::other(e),
            })?
    }

    pub async fn head(&self, key: &Key) -> Result<Option<Meta>> {
        match self.inner.head(key).await {
            Ok(m) => Ok(Some(m.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads an object, or the half-open byte `range` of it.
    pub async fn get(&self, key: &Key, range: Option<Range<u64>>) -> Result<Object> {
        if let Some(r) = &range {
            if r.start >= r.end {
                let size = self.head(key).await?.map(|m| m.size).unwrap_or(0);
                return Err(Error::RangeNotSatisfiable {
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
        }
        if let Some(path) = self.local_path(key) {
            let obj = local_read::read(path, key.to_string(), range).await?;
            let backend = self.backend();
            let body = obj
                .body
                .inspect_ok(move |b| Self::read(backend, b.len() as u64))
                .boxed();
            return Ok(Object { body, ..obj });
        }
        let opts = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let res = match self.inner.get_opts(key, opts).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { path, .. }) => return Err(Error::NotFound(path)),
            Err(e) => {
                // object_store reports an unsatisfiable range as a generic error; name it.
                if let Some(r) = range {
                    if let Some(m) = self.head(key).await? {
                        if r.start >= m.size {
                            return Err(Error::RangeNotSatisfiable {
                                start: r.start,
                                end: r.end,
                                size: m.size,
                            });
                        }
                    }
                }
                return Err(e.into());
            }
        };
        let meta: Meta = res.meta.clone().into();
        let range = res.range.clone();
        let backend = self.backend();
        let body = res
            .into_stream()
            .map_err(Error::from)
            .inspect_ok(move |b| Self::read(backend, b.len() as u64))
            .boxed();
        Ok(Object { meta, range, body })
    }

    pub async fn get_bytes(&self, key: &Key) -> Result<Bytes> {
        let b = self.inner.get(key).await?.bytes().await?;
        Self::read(self.backend(), b.len() as u64);
        Ok(b)
    }

    /// Copies an object to a local file.
    pub async fn download(&self, key: &Key, dest: &Path) -> Result<u64> {
        let obj = self.get(key, None).await?;
        let io = |source| Error::Io {
            path: dest.display().to_string(),
            source,
        };
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut body = obj.body;
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        Ok(n)
    }

    /// Every object under `prefix`, sorted by key.
    pub async fn list(&self, prefix: &Key) -> Result<Vec<Meta>> {
        let mut out: Vec<Meta> = self
            .inner
            .list(Some(prefix))
            .map_ok(Meta::from)
            .try_collect()
            .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    pub async fn delete(&self, key: &Key) -> Result<()> {
        match self.inner.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves an object to another key, replacing what is there: a rename on the local folder,
    /// a server-side copy then a delete on S3 (the bytes never leave the bucket).
    pub async fn rename(&self, from: &Key, to: &Key) -> Result<()> {
        self.inner.rename(from, to).await?;
        Ok(())
    }

    /// Deletes every object under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &Key) -> Result<usize> {
        let objects = self.list(prefix).await?;
        let n = objects.len();
        let keys = futures::stream::iter(objects.into_iter().map(|m| Ok(Key::from(m.key)))).boxed();
        self.inner
            .delete_stream(keys)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(e),
            })?;
        Ok(n)
    }
}

/// Coalescing size of [`Store::put_stream`] on the local backend: what one in-flight write may
/// hold in memory.
pub const STREAM_CHUNK: usize = 64 << 10;

fn sweep_dir(dir: &Path, older_than_s: u64, is_root: bool) -> Result<(u64, u64, u64)> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let (mut files, mut bytes, mut dirs) = (0, 0, 0);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0, 0)),
        Err(e) => return Err(io(e)),
    };
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(older_than_s);
    for entry in entries {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let meta = entry.metadata().map_err(io)?;
        if meta.is_dir() {
            let (f, b, d) = sweep_dir(&path, older_than_s, false)?;
            files += f;
            bytes += b;
            dirs += d;
        } else if entry.file_name().to_string_lossy().contains('#')
            && meta.modified().is_ok_and(|m| m < cutoff)
        {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    files += 1;
                    bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    // An empty folder is left by every deleted video or upload; a fresh one may be about to
    // receive its first object, hence the same age rule.
    if !is_root {
        let fresh = std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .map_or(true, |m| m >= cutoff);
        if !fresh && std::fs::remove_dir(dir).is_ok() {
            dirs += 1;
        }
    }
    Ok((files, bytes, dirs))
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt;
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxcast_base::VideoId;

    async fn roundtrip(store: Store) {
        let v = VideoId::new();
        let k = keys::video_object(v, "720p/seg-1.m4s").unwrap();
        store
            .put(&k, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let got = store.get(&k, Some(2..5)).await.unwrap();
        assert_eq!(got.range, 2..5);
        assert_eq!(got.meta.size, 10);
        let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
        assert_eq!(body.concat(), b"234");
        assert!(matches!(
            store.get(&k, Some(20..30)).await,
            Err(Error::RangeNotSatisfiable { size: 10, .. })
        ));
        store
            .put(&keys::video_object(v, "master.m3u8").unwrap(), Bytes::new())
            .await
            .unwrap();
        assert_eq!(store.list(&keys::video_prefix(v)).await.unwrap().len(), 2);
        // A rename moves the bytes and replaces what was at the target.
        let staged = keys::video_object(v, "chunks/c0/a1/720p/seg-1.m4s").unwrap();
        store
            .put(&staged, Bytes::from_static(b"new"))
            .await
            .unwrap();
        store.rename(&staged, &k).await.unwrap();
        assert!(store.head(&staged).await.unwrap().is_none());
        assert_eq!(
            store.get_bytes(&k).await.unwrap(),
            Bytes::from_static(b"new")
        );
        assert_eq!(
            store.delete_prefix(&keys::video_prefix(v)).await.unwrap(),
            2
        );
        assert!(store.head(&k).await.unwrap().is_none());
        assert!(matches!(store.get(&k, None).await, Err(Error::NotFound(_))));
    }

    fn chunks(
        n: usize,
        size: usize,
    ) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Unpin {
        futures::stream::iter((0..n).map(move |i| Ok(Bytes::from(vec![i as u8; size]))))
    }

    #[tokio::test]
    async fn put_stream_stores_everything_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("objects")).unwrap();
        let k = Key::from("uploads/u/part-00001.a");
        let n = store
            .put_stream(&k, chunks(40, 100_000))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 4_000_000);
        let back = store.get_bytes(&k).await.unwrap();
        assert_eq!(back.len(), 4_000_000);
        assert!(back[..100_000].iter().all(|&b| b == 0));
        assert!(back[3_900_000..].iter().all(|&b| b == 39));

        // A body that fails half way leaves neither the object nor a staging file.
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from(vec![1u8; 700_000])),
            Err(std::io::Error::other("client went away")),
        ]);
        let k2 = Key::from("uploads/u/part-00002.b");
        let r = store.put_stream(&k2, failing).await.unwrap();
        assert!(r.is_err());
        assert!(store.head(&k2).await.unwrap().is_none());
        let names: Vec<_> = std::fs::read_dir(dir.path().join("objects/uploads/u"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["part-00001.a"]);
    }

    #[tokio::test]
    async fn sweep_removes_old_staging_files_and_empty_folders_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        let store = Store::local(&root).unwrap();
        store
            .put(&Key::from("videos/v/master.m3u8"), Bytes::from_static(b"x"))
            .await
            .unwrap();
        std::fs::create_dir_all(root.join("uploads/gone")).unwrap();
        std::fs::write(root.join("videos/v/seg-1.m4s#3"), vec![0u8; 1000]).unwrap();
        // Nothing is old enough yet.
        assert_eq!(store.sweep_local(3600).await.unwrap(), (0, 0, 0));
        // uploads/gone, then uploads itself.
        assert_eq!(store.sweep_local(0).await.unwrap(), (1, 1000, 2));
        assert!(root.join("videos/v/master.m3u8").exists());
        assert!(!root.join("uploads/gone").exists());
        assert_eq!(store.list_dirs(&Key::from("videos")).await.unwrap(), ["v"]);
        assert_eq!(Store::memory().sweep_local(0).await.unwrap(), (0, 0, 0));
    }

    #[tokio::test]
    async fn memory_store_roundtrip() {
        roundtrip(Store::memory()).await;
    }

    #[tokio::test]
    async fn local_store_roundtrip_and_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("objects")).unwrap();
        roundtrip(store.clone()).await;
        let src = dir.path().join("big");
        let data: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&src, &data).unwrap();
        let k = Key::from("big/object");
        assert_eq!(store.put_file(&k, &src).await.unwrap(), data.len() as u64);
        let back = dir.path().join("back");
        store.download(&k, &back).await.unwrap();
        assert_eq!(std::fs::read(back).unwrap(), data);

        // Large reads stream in chunks; ranges across chunk edges come back exact, and the
        // metadata of a read is what `head` says.
        let head = store.head(&k).await.unwrap().unwrap();
        for r in [
            (1u64 << 20) - 3..(9 << 20) + 5,
            0..data.len() as u64,
            5..6,
            data.len() as u64 - 1..data.len() as u64 + 100,
        ] {
            let got = store.get(&k, Some(r.clone())).await.unwrap();
            assert_eq!(got.meta, head);
            let end = r.end.min(data.len() as u64);
            assert_eq!(got.range, r.start..end);
            let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
            assert_eq!(body.concat(), &data[r.start as usize..end as usize]);
        }
        assert!(matches!(
            store.get(&Key::from("big/missing"), None).await,
            Err(Error::NotFound(_))
        ));
    }
}
