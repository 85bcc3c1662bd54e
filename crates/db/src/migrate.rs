//! Numbered, embedded migrations, applied in order inside one transaction each.

use crate::{Db, Error, Result};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_live.sql")),
    (3, include_str!("../migrations/0003_part_objects.sql")),
    (4, include_str!("../migrations/0004_s3_uploads.sql")),
];

pub(crate) async fn run(db: &Db) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(&db.pool)
    .await?;
    for &(version, sql) in MIGRATIONS {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&db.pool)
                .await?;
        if done.is_some() {
            continue;
        }
        let mut tx = db.pool.begin().await?;
        for stmt in statements(sql) {
            sqlx::query(&stmt)
                .execute(&mut *tx)
                .await
                .map_err(|source| Error::Migration { version, source })?;
        }
        // Two processes may race to migrate a fresh database; the primary key makes the loser
        // fail here and roll back its copy.
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
            .bind(version)
            .bind(0_i64)
            .execute(&mut *tx)
            .await
            .map_err(|source| Error::Migration { version, source })?;
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

    #[test]
    fn splits_statements_and_drops_comments() {
        let s = statements("-- c;\nCREATE TABLE a (x INT);\n\nCREATE INDEX i ON a (x);\n");
        assert_eq!(s, vec!["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]);
    }

    #[tokio::test]
    async fn migrating_twice_is_a_no_op() {
        let (db, _dir) = crate::testing::sqlite().await;
        run(&db).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
    }
}
