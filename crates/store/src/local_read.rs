//! Reading local objects with few, large reads.
//!
//! `object_store`'s local backend reads a file in 8 KiB chunks, each a trip through the blocking
//! thread pool: a 2 MB segment costs ~250 of them, which caps the origin at a fraction of what a
//! static file server does. Here the whole range of an object of up to [`ONE_READ`] bytes is
//! read in one blocking call (open, stat, read), and larger ranges stream in [`CHUNK`]-sized
//! reads. Metadata (size, ETag, mtime) is the same as `object_store` reports for the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::PathBuf;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};

use crate::{Error, Meta, Object, Result};

/// Ranges up to this size are read in one call.
pub const ONE_READ: u64 = 8 << 20;
/// Larger ranges stream in reads of this size.
const CHUNK: u64 = 1 << 20;

fn io(path: &std::path::Path, source: std::io::Error) -> Error {
    if source.kind() == std::io::ErrorKind::NotFound {
        Error::NotFound(path.display().to_string())
    } else {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// The ETag `object_store` gives a local file (inode, mtime in µs, size), so that a cached
/// `head` and a read agree.
pub(crate) fn etag(m: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("{:x}-{mtime:x}-{:x}", m.ino(), m.len())
}

fn read_exact_at(file: &mut File, path: &std::path::Path, r: Range<u64>) -> Result<Bytes> {
    let len = r.end - r.start;
    // Read straight into uninitialised capacity: no zeroing pass over the buffer first.
    let mut buf = Vec::with_capacity(len as usize);
    file.seek(SeekFrom::Start(r.start))
        .map_err(|e| io(path, e))?;
    file.by_ref()
        .take(len)
        .read_to_end(&mut buf)
        .map_err(|e| io(path, e))?;
    if buf.len() as u64 != len {
        return Err(io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "object shorter than its size",
            ),
        ));
    }
    Ok(Bytes::from(buf))
}

async fn blocking<T: Send + 'static>(
    path: &std::path::Path,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io(path, std::io::Error::other(e)))?
}

/// Opens `path` and reads `range` of it (the whole file for `None`); `key` names it in errors
/// and metadata.
pub(crate) async fn read(path: PathBuf, key: String, range: Option<Range<u64>>) -> Result<Object> {
    let p = path.clone();
    let (meta, range, file, first) = blocking(&path, move || {
        let mut file = File::open(&p).map_err(|e| io(&p, e))?;
        let m = file.metadata().map_err(|e| io(&p, e))?;
        if m.is_dir() {
            return Err(Error::NotFound(p.display().to_string()));
        }
        let size = m.len();
        let range = match range {
            None => 0..size,
            Some(r) if r.start < size && r.start < r.end => r.start..r.end.min(size),
            Some(r) => {
                return Err(Error::RangeNotSatisfiable {
                    start: r.start,
                    end: r.end,
                    size,
                })
            }
        };
        let last_modified = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let meta = Meta {
            key,
            size,
            etag: Some(etag(&m)),
            last_modified,
        };
        let first_end = if range.end - range.start <= ONE_READ {
            range.end
        } else {
            range.start + CHUNK
        };
        let first = read_exact_at(&mut file, &p, range.start..first_end)?;
        Ok((meta, range, file, first))
    })
    .await?;
    let rest = range.start + first.len() as u64..range.end;
    let head = stream::once(async move { Ok(first) });
    let body: BoxStream<'static, Result<Bytes>> = if rest.is_empty() {
        head.boxed()
    } else {
        let tail = stream::unfold(Some((file, rest, path)), |st| async move {
            let (mut file, rest, path) = st?;
            if rest.is_empty() {
                return None;
            }
            let end = rest.end.min(rest.start + CHUNK);
            let p = path.clone();
            let chunk = rest.start..end;
            let res = blocking(&path, move || {
                let b = read_exact_at(&mut file, &p, chunk)?;
                Ok((b, file))
            })
            .await;
            match res {
                Ok((b, file)) => Some((Ok(b), Some((file, end..rest.end, path)))),
                Err(e) => Some((Err(e), None)),
            }
        });
        head.chain(tail).boxed()
    };
    Ok(Object { meta, range, body })
}
