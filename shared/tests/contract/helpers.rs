//! Small tools every contract suite uses: unique names, so the suites can
//! share one real server, and waits bounded by a deadline.

pub use lizards_testkit::{DEADLINE, eventually, real_url, unique, within};

use lizards_shared::store::{PostgresStore, SqliteStore};
use tempfile::TempDir;

/// A fresh SQLite store (the SQL adapter the embedded runs use); the
/// directory must outlive it.
pub async fn sqlite() -> (TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SqliteStore::open(&dir.path().join("lizards.db")).await.expect("store opens");
    (dir, store)
}

/// A store on the real PostgreSQL server, or `None` (skip) when no URL is set.
pub async fn postgres() -> Option<PostgresStore> {
    let url = real_url("DATABASE_URL")?;
    Some(within("connecting to PostgreSQL", PostgresStore::connect(&url)).await.expect("store connects"))
}
