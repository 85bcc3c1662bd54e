//! [`upload_file`]: a whole resumable, parallel upload, from local file to ready video.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{stream, StreamExt};
use tokio::sync::mpsc;

use crate::api::{
    Client, CompletePart, CreateUploadRequest, PartUrl, UploadState, UploadStatus, VideoInfo,
    VideoStatus,
};
use crate::error::{Error, Result};
use crate::parts::{part_count, part_range};
use crate::progress::Progress;
use crate::state::{self, FileIdentity, SavedUpload};

/// Retries of one part after its first attempt (network errors, 5xx, 403 with a refreshed URL).
const PART_RETRIES: u32 = 4;
/// Consecutive transient failures tolerated while polling the video.
const POLL_RETRIES: u32 = 5;

/// How [`upload_file`] behaves.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// Video title; the server derives one from the file name when `None`.
    pub title: Option<String>,
    /// Parts sent at once (and so held in memory at once). Values below 1 count as 1.
    pub parallel: usize,
    /// Directory of resume state files (see [`crate::state`]); created when needed.
    pub state_dir: PathBuf,
    /// Poll the video after the upload until it is `ready` or `failed`.
    pub wait: bool,
    /// First delay before retrying a part after a network error or 5xx; doubles per retry.
    pub retry_backoff: Duration,
    /// Delay between polls of the video while waiting.
    pub poll_interval: Duration,
}

impl Default for UploadOptions {
    /// No title, 4 parts in parallel, [`default_state_dir`], wait for processing, 500 ms backoff
    /// and poll interval.
    fn default() -> Self {
        UploadOptions {
            title: None,
            parallel: 4,
            state_dir: default_state_dir(),
            wait: true,
            retry_backoff: Duration::from_millis(500),
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// `$XDG_STATE_HOME/oxcast/uploads`, else `~/.local/state/oxcast/uploads` (falling back to
/// `%LOCALAPPDATA%` and then the temporary directory).
pub fn default_state_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local").join("state")))
        .or_else(|| var("LOCALAPPDATA").map(PathBuf::from))
        .unwrap_or_else(std::env::temp_dir)
        .join("oxcast")
        .join("uploads")
}

/// Uploads the file at `path` and returns the video.
///
/// Resumes an interrupted upload of the same file to the same server when the state file in
/// `opts.state_dir` names one the server still holds open (only the missing parts are sent); a
/// completed one skips straight to waiting; an unknown one (404) starts over. With `opts.wait`
/// it polls until the video is `ready` (returned) or `failed` ([`Error::ProcessingFailed`]).
///
/// The state file is removed once nothing is left to resume: when the video is ready or failed,
/// or, without `wait`, as soon as the server has accepted the completed upload.
pub async fn upload_file(
    client: &Client,
    path: &Path,
    opts: &UploadOptions,
    progress: &dyn Progress,
) -> Result<VideoInfo> {
    let ident = FileIdentity::of(path)?;
    let state_path = state::state_path(&opts.state_dir, &ident, client.server());

    let resumed = match state::load(&state_path) {
        Some(saved) => resume(client, &saved, ident.size).await?,
        None => None,
    };
    let start = match resumed {
        Some(start) => start,
        None => Start::Send(open(client, path, &ident, opts, &state_path).await?),
    };

    let video = match start {
        Start::Send(plan) => {
            progress.upload_started(ident.size, plan.stored_bytes);
            let file = File::open(&ident.canonical_path).map_err(|source| Error::Io {
                op: "cannot open",
                path: path.to_owned(),
                source,
            })?;
            let job = Job {
                client,
                upload_id: &plan.upload_id,
                file: Arc::new(file),
                path,
                size: ident.size,
                part_size: plan.part_size,
                backoff: opts.retry_backoff,
            };
            let sent = send_parts(&job, plan.todo, opts.parallel, progress).await?;
            let mut all: BTreeMap<u32, CompletePart> = plan
                .stored
                .into_iter()
                .map(|p| (p.part_number, p))
                .collect();
            all.extend(sent.into_iter().map(|p| (p.part_number, p)));
            let parts: Vec<CompletePart> = all.into_values().collect();
            let video = client.complete(&plan.upload_id, &parts).await?;
            progress.upload_done();
            video
        }
        Start::Completed { video_id } => {
            progress.upload_started(ident.size, ident.size);
            progress.upload_done();
            client.video(&video_id).await?
        }
    };

    if !opts.wait {
        state::remove(&state_path);
        return Ok(video);
    }
    let video = wait_until_final(client, &video.id, opts.poll_interval, progress).await?;
    state::remove(&state_path);
    progress.finished(&video);
    if video.status == VideoStatus::Failed {
        return Err(Error::ProcessingFailed {
            video_id: video.id,
            reason: video
                .error
                .unwrap_or_else(|| "the server gave no reason".to_owned()),
        });
    }
    Ok(video)
}

/// Where an upload starts from.
enum Start {
    /// Parts remain to be sent.
    Send(Plan),
    /// The server already has the whole upload; only waiting is left.
    Completed { video_id: String },
}

/// An open upload and the work left on it.
#[derive(Debug)]
struct Plan {
    upload_id: String,
    part_size: u64,
    /// Parts the server holds, with their ETags.
    stored: Vec<CompletePart>,
    stored_bytes: u64,
    /// Parts to send.
    todo: Vec<PartUrl>,
}

impl Plan {
    /// Checks that `stored` and `todo` together are exactly parts `1..=count`.
    fn new(
        upload_id: String,
        size: u64,
        part_size: u64,
        stored: Vec<(CompletePart, u64)>,
        todo: Vec<PartUrl>,
    ) -> Result<Self> {
        let count = part_count(size, part_size).ok_or_else(|| {
            Error::Protocol(format!(
                "upload {upload_id} has an invalid part size {part_size} for {size} bytes"
            ))
        })?;
        let todo_numbers: BTreeSet<u32> = todo.iter().map(|p| p.part_number).collect();
        // A part offered for (re)sending replaces any stored copy.
        let stored: Vec<(CompletePart, u64)> = stored
            .into_iter()
            .filter(|(p, _)| !todo_numbers.contains(&p.part_number))
            .collect();
        let mut seen: BTreeSet<u32> = todo_numbers;
        seen.extend(stored.iter().map(|(p, _)| p.part_number));
        if let Some(&n) = seen.iter().find(|&&n| n == 0 || n > count) {
            return Err(Error::Protocol(format!(
                "upload {upload_id} lists part {n}, but {size} bytes in parts of {part_size} make {count} parts"
            )));
        }
        if let Some(n) = (1..=count).find(|n| !seen.contains(n)) {
            return Err(Error::Protocol(format!(
                "upload {upload_id} lists part {n} neither as stored nor as missing"
            )));
        }
        let mut todo = todo;
        todo.sort_by_key(|p| p.part_number);
        todo.dedup_by_key(|p| p.part_number);
        Ok(Plan {
            upload_id,
            part_size,
            stored_bytes: stored.iter().map(|(_, size)| size).sum(),
            stored: stored.into_iter().map(|(p, _)| p).collect(),
            todo,
        })
    }

    fn from_status(status: UploadStatus) -> Result<Self> {
        let stored = status
            .parts
            .into_iter()
            .map(|p| {
                (
                    CompletePart {
                        part_number: p.part_number,
                        etag: p.etag,
                    },
                    p.size,
                )
            })
            .collect();
        Plan::new(
            status.upload_id,
            status.size,
            status.part_size,
            stored,
            status.missing,
        )
    }
}

/// Asks the server about a remembered upload. `Ok(None)` means "start over".
async fn resume(client: &Client, saved: &SavedUpload, size: u64) -> Result<Option<Start>> {
    let status = match client.upload_status(&saved.upload_id).await {
        Ok(s) => s,
        Err(e) if matches!(e.status(), Some(404 | 410)) => {
            tracing::info!(upload_id = %saved.upload_id, "remembered upload is gone; starting over");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    match status.state {
        UploadState::Completed => Ok(Some(Start::Completed {
            video_id: status.video_id,
        })),
        UploadState::Open if status.size == size && status.part_size == saved.part_size => {
            tracing::info!(
                upload_id = %status.upload_id,
                stored = status.parts.len(),
                missing = status.missing.len(),
                "resuming upload"
            );
            Ok(Some(Start::Send(Plan::from_status(status)?)))
        }
        state => {
            tracing::info!(upload_id = %saved.upload_id, ?state, "remembered upload cannot be resumed; starting over");
            Ok(None)
        }
    }
}

/// Opens a fresh upload and remembers it.
async fn open(
    client: &Client,
    path: &Path,
    ident: &FileIdentity,
    opts: &UploadOptions,
    state_path: &Path,
) -> Result<Plan> {
    let filename = path
        .file_name()
        .or_else(|| ident.canonical_path.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "upload".to_owned());
    let created = client
        .create_upload(&CreateUploadRequest {
            filename,
            size: ident.size,
            title: opts.title.clone(),
        })
        .await?;
    state::save(
        state_path,
        &SavedUpload {
            upload_id: created.upload_id.clone(),
            video_id: created.video_id.clone(),
            part_size: created.part_size,
            size: ident.size,
        },
    )?;
    Plan::new(
        created.upload_id,
        ident.size,
        created.part_size,
        Vec::new(),
        created.parts,
    )
}

/// What every part upload of one file shares.
struct Job<'a> {
    client: &'a Client,
    upload_id: &'a str,
    file: Arc<File>,
    path: &'a Path,
    size: u64,
    part_size: u64,
    backoff: Duration,
}

/// Sends `todo` with at most `parallel` parts in flight (and in memory), forwarding byte
/// progress as chunks go out. The first part that fails for good cancels the others.
async fn send_parts(
    job: &Job<'_>,
    todo: Vec<PartUrl>,
    parallel: usize,
    progress: &dyn Progress,
) -> Result<Vec<CompletePart>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
    let mut uploads = stream::iter(todo)
        .map(|part| send_part(job, part, tx.clone()))
        .buffer_unordered(parallel.max(1));
    let mut done = Vec::new();
    loop {
        tokio::select! {
            Some(n) = rx.recv() => progress.bytes_sent(n),
            next = uploads.next() => match next {
                Some(result) => done.push(result?),
                None => break,
            },
        }
    }
    while let Ok(n) = rx.try_recv() {
        progress.bytes_sent(n);
    }
    Ok(done)
}

/// Reads one part and `PUT`s it, retrying network errors and 5xx with exponential backoff and
/// fetching a fresh URL on 403 (signature expired).
async fn send_part(
    job: &Job<'_>,
    part: PartUrl,
    progress: mpsc::UnboundedSender<u64>,
) -> Result<CompletePart> {
    let n = part.part_number;
    let range = part_range(n, job.part_size, job.size)
        .ok_or_else(|| Error::Protocol(format!("part {n} is out of range")))?;
    let data = read_part(job.file.clone(), job.path, range).await?;
    let len = data.len() as u64;
    // Bytes of this part already reported; a retry reports only what goes beyond it.
    let reported = Arc::new(AtomicU64::new(0));
    let report = {
        let reported = reported.clone();
        move |upto: u64| {
            let before = reported.fetch_max(upto, Ordering::Relaxed);
            if upto > before {
                let _ = progress.send(upto - before);
            }
        }
    };
    let report = Arc::new(report);

    let mut url = part.url;
    let mut attempt = 0;
    loop {
        let sent = Arc::new(AtomicU64::new(0));
        let on_chunk = {
            let report = report.clone();
            move |bytes: u64| report(sent.fetch_add(bytes, Ordering::Relaxed) + bytes)
        };
        match job.client.put_part(n, &url, data.clone(), on_chunk).await {
            Ok(etag) => {
                report(len);
                return Ok(CompletePart {
                    part_number: n,
                    etag,
                });
            }
            Err(e) if attempt >= PART_RETRIES => return Err(e),
            Err(e) if e.status() == Some(403) => {
                tracing::info!(
                    part = n,
                    "part URL refused (expired?); fetching a fresh one"
                );
                url = fresh_url(job.client, job.upload_id, n).await?;
            }
            Err(e) if e.is_transient() => {
                let delay = job.backoff * 2u32.pow(attempt);
                tracing::warn!(part = n, error = %e, ?delay, "retrying part");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
        attempt += 1;
    }
}

/// A freshly signed URL for part `n`, from `GET /uploads/{id}`.
async fn fresh_url(client: &Client, upload_id: &str, n: u32) -> Result<String> {
    let status = client.upload_status(upload_id).await?;
    status
        .missing
        .into_iter()
        .find(|p| p.part_number == n)
        .map(|p| p.url)
        .ok_or_else(|| {
            Error::Protocol(format!(
                "the URL of part {n} was refused (HTTP 403) and upload {upload_id} offers no fresh one"
            ))
        })
}

/// Reads `range` of the file with a positioned read on the blocking pool.
async fn read_part(file: Arc<File>, path: &Path, range: std::ops::Range<u64>) -> Result<Bytes> {
    let io_err = |source| Error::Io {
        op: "cannot read",
        path: path.to_owned(),
        source,
    };
    let len = usize::try_from(range.end - range.start)
        .map_err(|_| io_err(io::Error::other("part too large for this platform")))?;
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len];
        read_exact_at(&file, &mut buf, range.start).map(|()| Bytes::from(buf))
    })
    .await
    .map_err(|e| io_err(io::Error::other(e)))?;
    read.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file got shorter during the upload",
            ))
        } else {
            io_err(e)
        }
    })
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Polls the video every `interval` until it is `ready` or `failed`, tolerating a few
/// consecutive transient failures (a server restart, say).
async fn wait_until_final(
    client: &Client,
    video_id: &str,
    interval: Duration,
    progress: &dyn Progress,
) -> Result<VideoInfo> {
    let mut failures = 0;
    loop {
        match client.video(video_id).await {
            Ok(video) => {
                failures = 0;
                progress.processing(video.status.as_str(), video.progress);
                if video.status.is_final() {
                    return Ok(video);
                }
            }
            Err(e) if e.is_transient() && failures < POLL_RETRIES => {
                failures += 1;
                tracing::warn!(error = %e, "polling the video failed; trying again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(n: u32) -> PartUrl {
        PartUrl {
            part_number: n,
            url: format!("/upload/u/{n}"),
        }
    }

    fn stored(n: u32, size: u64) -> (CompletePart, u64) {
        (
            CompletePart {
                part_number: n,
                etag: format!("e{n}"),
            },
            size,
        )
    }

    #[test]
    fn plan_accepts_exact_cover() {
        let p = Plan::new(
            "u".into(),
            4500,
            1000,
            vec![stored(1, 1000), stored(3, 1000)],
            vec![url(5), url(2), url(4)],
        )
        .unwrap();
        assert_eq!(p.stored_bytes, 2000);
        let todo: Vec<u32> = p.todo.iter().map(|p| p.part_number).collect();
        assert_eq!(todo, [2, 4, 5]);
    }

    #[test]
    fn plan_rejects_gaps_and_out_of_range_parts() {
        let err = Plan::new("u".into(), 4500, 1000, vec![stored(1, 1000)], vec![url(2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("part 3 neither"), "{err}");
        let err = Plan::new("u".into(), 1500, 1000, vec![], vec![url(1), url(2), url(3)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lists part 3, but 1500 bytes"), "{err}");
        assert!(Plan::new("u".into(), 10, 0, vec![], vec![]).is_err());
    }

    #[test]
    fn plan_prefers_resending_over_a_stored_copy() {
        let p = Plan::new(
            "u".into(),
            2000,
            1000,
            vec![stored(1, 1000), stored(2, 1000)],
            vec![url(2)],
        )
        .unwrap();
        assert_eq!(p.stored_bytes, 1000);
        assert_eq!(p.stored.len(), 1);
    }

    #[tokio::test]
    async fn positioned_reads_return_the_exact_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..4500u32).map(|i| (i * 7 % 256) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        for n in 1..=5 {
            let r = part_range(n, 1000, 4500).unwrap();
            let got = read_part(file.clone(), &path, r.clone()).await.unwrap();
            assert_eq!(&got[..], &data[r.start as usize..r.end as usize]);
        }
        let err = read_part(file, &path, 4000..5000).await.unwrap_err();
        assert!(err.to_string().contains("got shorter"), "{err}");
    }
}
