//! Metadata and the durable job queue.
//!
//! One schema and one set of queries serve SQLite (the embedded default) and PostgreSQL
//! (scale-out) through sqlx's `Any` driver; SQL is kept to the portable subset and the few places
//! where the dialects must differ are picked by [`Backend`]. This crate owns the numbered
//! migrations, and nothing outside it writes SQL.
//!
//! Every timestamp is milliseconds since the epoch, passed in by the caller from a
//! [`oxcast_base::Clock`], so lease expiry and URL expiry are testable without sleeping.

mod jobs;
mod live;
mod migrate;
mod model;
mod s3_uploads;
mod uploads;
mod videos;

pub use jobs::{Job, JobKind, JobOutcome};
pub use live::{LiveSession, LiveStream, SessionStatus};
pub use model::{Rendition, Upload, UploadPart, UploadState, Video, VideoStatus};
pub use s3_uploads::S3Upload;
pub use uploads::{CompleteError, NewUpload, PartRecorded};
pub use videos::Published;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("unsupported database url {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("migration {version} failed: {source}")]
    Migration {
        version: i64,
        #[source]
        source: sqlx::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A handle on the metadata database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl(url.to_string()));
        };
        let mut opts = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 16,
        });
        if backend == Backend::Sqlite {
            // Per connection: wait on a busy writer instead of failing, and enforce the
            // cascades the schema declares.
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        if backend == Backend::Sqlite {
            // WAL is a property of the file: readers never block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let db = Self { pool, backend };
        migrate::run(&db).await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Cheap liveness probe for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

pub(crate) fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

pub(crate) fn get_id<T: std::str::FromStr>(
    row: &AnyRow,
    col: &str,
    table: &'static str,
) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    use sqlx::Row;
    let s: String = row.try_get(col)?;
    s.parse().map_err(|e| corrupt(table, format!("{col}: {e}")))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A fresh SQLite database in a temp dir; PostgreSQL is exercised by the integration suite.
    pub async fn sqlite() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        (Db::connect(&url).await.unwrap(), dir)
    }
}
