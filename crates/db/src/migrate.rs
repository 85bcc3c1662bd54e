//! Numbered, embedded migrations, applied in order inside one transaction each.

use sqlx::{AnyConnection, Connection};

use crate::{Backend, Db, Error, Result};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_live.sql")),
    (3, include_str!("../migrations/0003_part_objects.sql")),
    (4, include_str!("../migrations/0004_s3_uploads.sql")),
    (5, include_str!("../migrations/0005_chunked_jobs.sql")),
    (6, include_str!("../migrations/0006_nodes.sql")),
    (7, include_str!("../migrations/0007_live_leases.sql")),
    (8, include_str!("../migrations/0008_live_viewer_counts.sql")),
    (9, include_str!("../migrations/0009_live_relay.sql")),
];

/// Any fixed number: the advisory lock that serialises migrators on PostgreSQL.
const MIGRATION_LOCK: i64 = 0x6f78_6361_7374; // "oxcast"

/// Brings the schema up to date. Several processes may start at once on a fresh database: on
/// PostgreSQL they take turns under an advisory lock; on SQLite each migration first claims its
/// version row, which takes the write lock, so the loser finds it applied and moves on.
pub(crate) async fn run(db: &Db) -> Result<()> {
    let mut conn = db.pool.acquire().await?;
    if db.backend == Backend::Postgres {
        // Wrapped: the Any driver cannot decode pg_advisory_lock's `void`.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_lock($1)) l")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let applied = apply(&mut conn).await;
    if db.backend == Backend::Postgres {
        let unlocked = sqlx::query("SELECT 1 FROM (SELECT pg_advisory_unlock($1)) l")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        if unlocked.is_err() {
            // Never hand a connection that may still hold the lock back to the pool.
            drop(conn.detach());
        }
    }
    applied
}

async fn apply(conn: &mut AnyConnection) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    for &(version, sql) in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *conn)
                .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = conn.begin().await?;
        // The claim comes first: on SQLite it takes the write lock before anything is read, and
        // a concurrent migrator that got there first makes it fail on the primary key.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2) \
             ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .bind(0_i64)
        .execute(&mut *tx)
        .await
        .map_err(|source| Error::Migration { version, source })?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            continue;
        }
        for stmt in statements(sql) {
            sqlx::query(&stmt)
                .execute(&mut *tx)
                .await
                .map_err(|source| Error::Migration { version, source })?;
        }
        tx.commit().await?;
        tracing::info!(version, "applied migration");
    }
    Ok(())
}

/// Splits a migration into statements; ours contain no semicolons inside literals.
fn statements(sql: &str) -> Vec<String> {
    sql.lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::each_backend;

    #[test]
    fn splits_statements_and_drops_comments() {
        let s = statements("-- c;\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s, vec!["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]);
    }

    #[tokio::test]
    async fn migrating_twice_is_a_no_op() {
        each_backend(|db| async move {
            run(&db).await.unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
                .fetch_one(db.pool())
                .await
                .unwrap();
            assert_eq!(n, MIGRATIONS.len() as i64);
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_migrating_a_fresh_database_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..3 {
            let sqlite = format!(
                "sqlite://{}?mode=rwc",
                dir.path().join(format!("{round}.db")).display()
            );
            let postgres = oxcast_testkit::postgres::database();
            for url in [sqlite, postgres] {
                let mut racers = tokio::task::JoinSet::new();
                for _ in 0..4 {
                    let url = url.clone();
                    racers.spawn(async move { Db::connect(&url).await });
                }
                while let Some(r) = racers.join_next().await {
                    let db = r.unwrap().unwrap_or_else(|e| panic!("{url}: {e}"));
                    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
                        .fetch_one(db.pool())
                        .await
                        .unwrap();
                    assert_eq!(n, MIGRATIONS.len() as i64);
                }
            }
        }
    }
}
