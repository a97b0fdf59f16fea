//! Whether the database can be written, for `/readyz`.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use super::{now_ms, Result, DB_FILE};

/// Commits a one-row write (table `health`, migration 0004) on a connection of its own that
/// waits at most `wait` for a lock. A connection of its own: the node's pool waits up to 30 s
/// for a lock, and a probe must neither take so long nor hold the pool's connections; and a
/// fresh open also finds a file or a file system that turned read-only. A committed write (with
/// the node's `synchronous = FULL`) also finds a full disk, which `BEGIN IMMEDIATE` alone
/// would not.
pub async fn probe_writable(data_dir: &Path, wait: Duration) -> Result<()> {
    let mut conn = SqliteConnectOptions::new()
        .filename(data_dir.join(DB_FILE))
        .create_if_missing(false)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
        .busy_timeout(wait)
        .connect()
        .await?;
    let written = sqlx::query(
        "INSERT INTO health (id, checked_at) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
    )
    .bind(now_ms())
    .execute(&mut conn)
    .await;
    let _ = conn.close().await;
    written?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{Queue, QueueError};

    #[tokio::test]
    async fn a_held_write_lock_makes_the_database_unwritable_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path()).await.unwrap();
        probe_writable(dir.path(), Duration::from_millis(200))
            .await
            .unwrap();

        // Another writer holds the lock, as an admin's sqlite3 in a transaction would.
        let mut other = queue.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *other).await.unwrap();
        let err = probe_writable(dir.path(), Duration::from_millis(200))
            .await
            .unwrap_err();
        let QueueError::Db(sqlx::Error::Database(db)) = &err else {
            panic!("unexpected error {err}");
        };
        assert!(db.message().contains("locked"), "{}", db.message());

        sqlx::query("ROLLBACK").execute(&mut *other).await.unwrap();
        probe_writable(dir.path(), Duration::from_millis(200))
            .await
            .unwrap();
        drop(other);
        queue.close().await;
    }
}
