//! The reading connections of a SQLite store (ADR 0012).
//!
//! A point read (a run's head, one entry, one scenario) runs on the calling task's thread: in
//! WAL mode a reader never waits for the writer, and the read takes microseconds, less than
//! the two thread hand-overs a connection thread or the blocking pool would cost. Reads whose
//! size the caller chooses (a page of entries, scenarios or data shapes) run on the blocking
//! pool, so they never hold a runtime worker.
//!
//! Connections are kept in an idle list rather than a pool with waiting: a read never awaits
//! while it holds one, so at most one connection is in use per thread reading at that moment;
//! a read that finds none idle opens one, and at most [`MAX_IDLE`] are kept for later.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _};

use crate::store::StoreError;

/// The most idle reading connections kept open.
const MAX_IDLE: usize = 8;

/// How long a read waits on a lock (only a crash recovery or a checkpoint's truncation of the
/// WAL holds readers out): short, as a point read holds its thread meanwhile.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// The reading side of a store: its database file and the idle connections to it.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Set by `close`: later reads are refused.
    closed: AtomicBool,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl Readers {
    /// Readers of the (migrated) database at `path`; connections open on first use.
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        }
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Runs `read` on this thread, on an idle connection or a new one.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the store is closed, the connection cannot be opened
    /// or the read fails in SQLite; what `read` itself answers otherwise.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(unavailable("the SQLite store is closed"));
        }
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self
                .connect()
                .map_err(|e| unavailable(format!("{}: {e}", self.path.display())))?,
        };
        let result = read(&conn);
        // A connection whose read failed in SQLite is dropped rather than reused: its state
        // after, say, an I/O error is not worth trusting.
        if !matches!(result, Err(StoreError::Unavailable(_)))
            && !self.closed.load(Ordering::Acquire)
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    /// Runs `read` like [`Readers::read`], on the blocking pool: for reads whose size the
    /// caller chooses.
    ///
    /// # Errors
    /// As [`Readers::read`]; [`StoreError::Unavailable`] when the blocking task fails.
    pub(super) async fn read_blocking<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || readers.read(read))
            .await
            .map_err(|e| unavailable(format!("the SQLite read task: {e}")))?
    }

    /// Refuses later reads and closes the idle connections (one in use closes when its read
    /// returns).
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A SQLite failure during a read.
fn read_failed(e: rusqlite::Error) -> StoreError {
    unavailable(e)
}

/// The row `sql` finds for `params` (at most one, by a key), mapped by `row`.
///
/// # Errors
/// [`StoreError::Unavailable`] when SQLite fails.
pub(super) fn one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>, StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.query_row(params, row).optional())
        .map_err(read_failed)
}

/// Every row `sql` finds for `params` (a page: the statement has a `LIMIT`), each mapped by
/// `row` and then checked and parsed by `decode`.
///
/// # Errors
/// [`StoreError::Unavailable`] when SQLite fails; what `decode` answers.
pub(super) fn all<R, T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    row: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<R>,
    mut decode: impl FnMut(R) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(read_failed)?;
    let rows = stmt.query_map(params, row).map_err(read_failed)?;
    rows.map(|r| decode(r.map_err(read_failed)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(readers: &Readers) -> usize {
        readers.idle.lock().unwrap().len()
    }

    /// Readers of a new, empty database in a temporary directory.
    fn readers_of_a_new_database() -> (tempfile::TempDir, Readers) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = wal; CREATE TABLE t (x INTEGER);")
            .unwrap();
        let readers = Readers::new(&path);
        (dir, readers)
    }

    /// Reads in progress at once each get a connection of their own; at most `MAX_IDLE` are
    /// kept once they return.
    #[test]
    fn concurrent_reads_open_connections_and_keep_at_most_max_idle() {
        let (_dir, readers) = readers_of_a_new_database();
        fn nest(readers: &Readers, depth: usize) -> Result<usize, StoreError> {
            readers.read(|conn| {
                let one: i64 = conn
                    .query_row("SELECT 1", [], |r| r.get(0))
                    .map_err(read_failed)?;
                let below = if depth > 1 {
                    nest(readers, depth - 1)?
                } else {
                    0
                };
                Ok(below + usize::try_from(one).unwrap())
            })
        }
        assert_eq!(nest(&readers, 3).unwrap(), 3);
        assert_eq!(
            idle(&readers),
            3,
            "three reads at once, three connections kept"
        );
        assert_eq!(nest(&readers, MAX_IDLE + 4).unwrap(), MAX_IDLE + 4);
        assert_eq!(idle(&readers), MAX_IDLE);
    }

    /// After `close` a read is refused as unavailable and no connection is kept.
    #[test]
    fn a_closed_reader_refuses() {
        let (_dir, readers) = readers_of_a_new_database();
        readers.read(|_| Ok(())).unwrap();
        assert_eq!(idle(&readers), 1);
        readers.close();
        assert_eq!(idle(&readers), 0);
        let refused = readers.read(|_| Ok(()));
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(m)) if m.contains("closed")),
            "{refused:?}"
        );
    }

    /// A read that fails in SQLite answers unavailable and its connection is not reused.
    #[test]
    fn a_failed_read_drops_its_connection() {
        let (_dir, readers) = readers_of_a_new_database();
        let failed = readers.read(|conn| {
            conn.query_row("SELECT x FROM missing", [], |_| Ok(()))
                .map_err(read_failed)
        });
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        assert_eq!(idle(&readers), 0);
    }
}
