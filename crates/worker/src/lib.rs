//! VOD processing workers.
//!
//! A worker leases a `process_video` job from the queue and runs the pipeline: fetch the
//! uploaded source, probe it, encode the ladder in one ffmpeg process, cut the CMAF outputs into
//! segments, write HLS and DASH manifests and a poster, and publish. While it works a companion
//! task renews the lease and records progress; if the lease is lost the attempt is abandoned
//! (ffmpeg is killed) and nothing is published.
//!
//! Outputs are idempotent: an attempt first clears whatever an earlier, crashed attempt left
//! under the video's prefix, and the video only turns `ready` in the same transaction that
//! marks the job done, after every object is stored.
//!
//! Workers take everything as parameters (database, store, clock, config), so `oxcast serve`
//! runs them in-process and a separate worker process on another machine runs the same code.

mod chunked;
mod package;
mod pipeline;
mod reconcile;
mod runner;

pub use package::{package_rendition, PackagedRendition, Placement, SegmentInfo};
pub use reconcile::{reconcile_once, run_reconciler, Reconciled};
pub use runner::{run_workers, WorkerContext};

use oxcast_base::VideoId;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input can never be processed: tell the uploader, don't retry.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Transcode(#[from] oxcast_transcode::Error),
    #[error(transparent)]
    Store(#[from] oxcast_store::Error),
    #[error(transparent)]
    Db(#[from] oxcast_db::Error),
    #[error("packaging {rendition}: {source}")]
    Package {
        rendition: String,
        #[source]
        source: oxcast_media::Error,
    },
    /// A chunk's output is not the stretch of the video it stands for (frame count,
    /// boundaries, numbering), or the chunks do not join up: retried, never published.
    #[error("chunk check failed: {0}")]
    ChunkCheck(String),
    #[error("video {0} has no completed upload")]
    NoSource(VideoId),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("lease lost; attempt abandoned")]
    LeaseLost,
    #[error("the video was deleted; attempt abandoned")]
    VideoDeleted,
    #[error("shutting down")]
    Shutdown,
}

impl Error {
    /// The database or the bucket could not be reached: the infrastructure's fault, not the
    /// job's, so it must not use up the job's attempts.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Error::Db(_) | Error::Store(oxcast_store::Error::Backend(_))
        )
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rejected(_) => false,
            Error::Transcode(e) => e.is_retryable(),
            _ => true,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
