//! Metadata and the durable job queue.
//!
//! One schema and one set of queries serve SQLite (the embedded default) and PostgreSQL
//! (scale-out) through sqlx's `Any` driver; SQL is kept to the portable subset and the few places
//! where the dialects must differ are picked by [`Backend`]. This crate owns the numbered
//! migrations, and nothing outside it writes SQL.
//!
//! Every timestamp is milliseconds since the epoch, passed in by the caller from a
//! [`oxcast_base::Clock`], so lease expiry and URL expiry are testable without sleeping.

pub mod admin;
mod changes;
mod chunks;
mod jobs;
mod leases;
mod live;
mod live_segments;
mod migrate;
mod model;
mod nodes;
mod s3_uploads;
mod uploads;
mod videos;
mod viewer_counts;

#[cfg(test)]
mod concurrency_tests;
#[cfg(test)]
mod outage_tests;

pub use changes::{Change, Changes, Received, MAX_PAYLOAD};
pub use chunks::{ChunkCounts, NewTask, TaskResult};
pub use jobs::{Job, JobKind, JobOutcome};
pub use leases::StreamLease;
pub use live::{LiveSession, LiveStream, SessionStatus};
pub use live_segments::SegmentRow;
pub use model::{Rendition, Upload, UploadPart, UploadState, Video, VideoStatus};
pub use nodes::{LiveEncoder, Node, NodeBeat};
pub use s3_uploads::S3Upload;
pub use uploads::{CompleteError, NewUpload, PartRecorded};
pub use videos::Published;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Connection};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The URL as shown: never with its password.
    #[error("unsupported database url {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// Without its password.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("no answer from the database at {url} within {} s", .after.as_secs())]
    ConnectTimeout {
        url: String,
        after: std::time::Duration,
    },
    /// A caller's mistake, said so.
    #[error("{0}")]
    Invalid(String),
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
    /// For the change listener's own connection; shown redacted.
    url: DbUrl,
    changes: changes::LocalChanges,
}

/// A database URL that never prints its password.
#[derive(Clone)]
struct DbUrl(String);

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl std::ops::Deref for DbUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Db {
    /// Connects and brings the schema up to date. A server that cannot be reached fails this
    /// within [`CONNECT_TIMEOUT`], with an error naming the URL (without its password).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let shown = redact_url(url);
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl(shown));
        };
        if backend == Backend::Postgres {
            // One direct attempt first: its error says why (refused, no such database, bad
            // password), where the pool would only report that it timed out.
            match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::AnyConnection::connect(url)).await {
                Err(_) => {
                    return Err(Error::ConnectTimeout {
                        url: shown,
                        after: CONNECT_TIMEOUT,
                    })
                }
                Ok(Err(source)) => return Err(Error::Connect { url: shown, source }),
                Ok(Ok(conn)) => {
                    let _ = conn.close().await;
                }
            }
        }
        let mut opts = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 16,
            })
            // Checks an idle connection before handing it out, so connections that a server
            // restart killed are replaced instead of failing the next query.
            .test_before_acquire(true);
        if backend == Backend::Postgres {
            // Also how long a query waits for a server that is restarting before it fails
            // (the pool retries refused connections meanwhile); callers retry with backoff.
            // SQLite keeps the default 30 s: there, waiting means a busy writer, not an outage.
            opts = opts.acquire_timeout(CONNECT_TIMEOUT);
        }
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
        let pool = opts
            .connect(url)
            .await
            .map_err(|source| Error::Connect { url: shown, source })?;
        if backend == Backend::Sqlite {
            enable_wal(&pool).await?;
        }
        let db = Self {
            pool,
            backend,
            url: DbUrl(url.to_string()),
            changes: Default::default(),
        };
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

/// Puts the SQLite file in WAL mode (a property of the file: readers never block the writer).
/// Switching needs an exclusive lock that SQLite's busy timeout does not wait for, so when
/// several processes open a fresh file at once the losers get `SQLITE_BUSY` at once; they retry
/// until one has switched it, and then find it switched.
async fn enable_wal(pool: &AnyPool) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tried = async {
            let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
                .fetch_one(pool)
                .await?;
            if !mode.eq_ignore_ascii_case("wal") {
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(pool)
                    .await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        match tried {
            Err(sqlx::Error::Database(e))
                if is_sqlite_busy(e.code().as_deref()) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// SQLITE_BUSY (5) and its extended codes (BUSY_RECOVERY 261, BUSY_SNAPSHOT 517, ...).
fn is_sqlite_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// How long connecting may take before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// `url` fit for errors and logs: the password and the query (which may carry one) removed.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        let url = url.split('?').next().unwrap_or_default();
        return match url.split_once(':') {
            Some((scheme, _)) if url.contains('@') => format!("{scheme}:…"),
            _ => url.to_string(),
        };
    };
    let rest = rest.split('?').next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{path}")
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

    /// A fresh SQLite database in a temp dir.
    pub async fn sqlite() -> (Db, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        (Db::connect(&url).await.unwrap(), dir)
    }

    /// A fresh database on this test binary's PostgreSQL.
    pub async fn postgres() -> Db {
        Db::connect(&oxcast_testkit::postgres::database())
            .await
            .unwrap()
    }

    /// A video with a completed one-part upload and its processing job queued, at time 0.
    pub async fn queued_video(db: &Db, max_attempts: u32) -> oxcast_base::VideoId {
        let new = crate::NewUpload {
            title: "t",
            filename: "f",
            size: 1,
            part_size: 1,
            expires_at: 9,
        };
        let (v, up) = db.create_upload(&new, 0).await.unwrap();
        let part = crate::UploadPart {
            part_number: 1,
            size: 1,
            etag: "e".into(),
            object: None,
        };
        db.put_part(up.id, &part, 0).await.unwrap();
        db.complete_upload(up.id, &[(1, "e".into())], max_attempts, 0)
            .await
            .unwrap()
            .unwrap();
        v.id
    }

    /// Runs `test` on a fresh SQLite database, then on a fresh PostgreSQL one.
    pub async fn each_backend<F, Fut>(test: F)
    where
        F: Fn(Db) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (db, _dir) = sqlite().await;
        eprintln!("-- on SQLite");
        test(db).await;
        eprintln!("-- on PostgreSQL");
        test(postgres().await).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_keep_user_host_port_and_database_only() {
        assert_eq!(
            redact_url("postgres://ox:s3cret@db.local:5433/oxcast?sslmode=require&password=x"),
            "postgres://ox@db.local:5433/oxcast"
        );
        assert_eq!(
            redact_url("postgresql://ox:p%40ss@[::1]:5432/db"),
            "postgresql://ox@[::1]:5432/db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact_url("sqlite:///var/lib/oxcast/db.sqlite?mode=rwc"),
            "sqlite:///var/lib/oxcast/db.sqlite"
        );
        assert_eq!(redact_url("mysql:a:b@c"), "mysql:…");
        assert_eq!(redact_url("sqlite:x.db"), "sqlite:x.db");
    }
}
