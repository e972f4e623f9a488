//! The pool of read-only connections every page and the JSON API read through
//! (DESIGN §1 principle 1: readers never write).
//!
//! The writer owns the only read-write connection; pages read through [`ReadPool`], a
//! handful of `SQLITE_OPEN_READ_ONLY` connections used inside `spawn_blocking`, so a
//! slow query never stalls the async runtime and, thanks to WAL, never blocks a commit.
//! [`ReadPool::run`] wraps each call in one read transaction, so a page's numbers all
//! come from the same snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

/// A small pool of read-only connections to the database file. Cheap to clone.
///
/// Why a pool and not one connection behind a mutex: page renders overlap (the `/flows` page,
/// its live fragment, an API scrape), and each SQLite connection is single-threaded.
/// Why not more than a few: every connection keeps its own page cache, and a router has
/// 128 MB of RAM.
#[derive(Clone)]
pub struct ReadPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    path: PathBuf,
    /// Idle connections. A `std` mutex: it is held only to push or pop, never across
    /// an await or a query.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: bounds concurrent queries to the pool size. The permit
    /// moves into the blocking task, so a request the client abandoned still holds its
    /// slot until its query really finishes and the pool never grows past `size`.
    permits: Arc<Semaphore>,
}

/// How long a reader waits on a lock. In WAL mode readers are normally never blocked;
/// the rare exceptions (WAL recovery after a crash, a `TRUNCATE` checkpoint) are short.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per read connection, in KiB (SQLite's negative `cache_size` unit).
const READ_CACHE_KIB: i64 = 2048;

/// Distinct SQL texts cached per connection. Flow filters build their WHERE clause from
/// the parameters present, so there are a few dozen shapes; the cache keeps the common
/// ones prepared.
const STATEMENT_CACHE: usize = 48;

impl ReadPool {
    /// Opens `size` (at least 1) read-only connections now, so a missing or unreadable
    /// database is reported at start-up rather than on the first page view.
    pub fn open(db_path: &Path, size: usize) -> anyhow::Result<ReadPool> {
        let size = size.max(1);
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            conns.push(open_read_connection(db_path).with_context(|| {
                format!("opening {} read-only for the web UI", db_path.display())
            })?);
        }
        // WAL is a property of the file, set by the writer; a read-only connection cannot
        // set it. Without it readers and the writer block each other, so say so.
        let mode: String = conns[0]
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .with_context(|| format!("reading the journal mode of {}", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "{} is in journal_mode={mode}, not WAL: page views will block commits",
                db_path.display()
            );
        }
        Ok(ReadPool {
            shared: Arc::new(PoolShared {
                path: db_path.to_owned(),
                idle: Mutex::new(conns),
                permits: Arc::new(Semaphore::new(size)),
            }),
        })
    }

    /// Runs `f` on a pooled connection on tokio's blocking thread pool, inside one read
    /// transaction (one consistent snapshot for everything `f` reads).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .context("read pool closed")?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            // A connection is lost only if a query panicked; replace it lazily.
            let conn = match conn {
                Some(conn) => conn,
                None => {
                    open_read_connection(&shared.path).context("reopening a read connection")?
                }
            };
            let result = in_read_transaction(&conn, f);
            shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result.context("database read failed")
        })
        .await
        .context("database read task failed")?
    }
}

fn open_read_connection(path: &Path) -> rusqlite::Result<Connection> {
    // NO_MUTEX: a connection is used by one thread at a time (the pool hands it out).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Belt and braces on top of READ_ONLY: even a bug here cannot become a second writer.
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -READ_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    register_functions(&conn)?;
    Ok(conn)
}

fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.execute_batch("BEGIN")?;
    let result = f(conn);
    // Nothing was written: COMMIT and ROLLBACK both just end the snapshot.
    let end = conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    end?;
    Ok(value)
}

/// Registers the SQL functions queries on stored addresses use
/// ([`super::addr::register`]).
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    super::addr::register(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::devices::read::devices;
    use crate::store::flows::read::{FlowFilter, flows};
    use crate::store::testdata::seeded;

    #[tokio::test]
    async fn pool_reads_and_refuses_writes() {
        let (dir, _conn) = seeded();
        let pool = ReadPool::open(&dir.db(), 2).unwrap();
        let page = pool
            .run(|c| flows(c, &FlowFilter::default()))
            .await
            .unwrap();
        assert_eq!(page.total, 4);
        let err = pool
            .run(|c| c.execute("DELETE FROM flows", []))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("readonly"), "{err:#}");
        // The pool still works after an error.
        let n = pool.run(|c| devices(c).map(|d| d.len())).await.unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn missing_database_is_an_error_naming_the_file() {
        let err = ReadPool::open(Path::new("/nonexistent/netmon.db"), 1)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/netmon.db"),
            "{err:#}"
        );
    }
}
