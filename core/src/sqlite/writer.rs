//! The one writer of a SQLite store, and its group commit (ADR 0012).
//!
//! Every write of a store (a run's creation, a trigger's append, a scenario, a data shape) is
//! a job for one thread that owns the store's only writing connection. The thread takes the
//! jobs that are waiting, applies each inside its own savepoint of one transaction and commits
//! them together: one WAL sync for the whole batch. Each caller is answered only after that
//! commit, with its own job's result: a job refused on its own (a revision conflict, a duplicate
//! trigger id) is rolled back to its savepoint and leaves the others untouched.
//!
//! The statements run on the thread that owns the connection (rusqlite), so a batch costs one
//! hand-over in and one answer out per job, not a round trip per statement.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::access::JsonLinesAuditSink;
use crate::store::StoreError;

/// How a SQLite store groups concurrent writes into one commit (`[store.sqlite.group_commit]`).
///
/// A batch closes when it holds `max_batch` writes or `max_batch_bytes` of documents, or when
/// nothing more is waiting. When the previous batch had company, the writer waits up to
/// `max_wait_us` for as many writes as it held; a lone writer never waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupCommit {
    /// Group concurrent writes at all; `false` commits each write on its own.
    pub enabled: bool,
    /// The most writes one commit holds.
    pub max_batch: u32,
    /// The most document bytes one commit holds (a larger single write still goes alone).
    pub max_batch_bytes: u64,
    /// The longest a batch waits for company, in microseconds.
    pub max_wait_us: u64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            enabled: true,
            max_batch: 64,
            max_batch_bytes: 4 * 1024 * 1024,
            max_wait_us: 500,
        }
    }
}

/// The largest `max_batch` accepted.
pub const MAX_BATCH_LIMIT: u32 = 4096;
/// The largest `max_batch_bytes` accepted (256 MiB).
pub const MAX_BATCH_BYTES_LIMIT: u64 = 256 * 1024 * 1024;
/// The largest `max_wait_us` accepted (100 ms).
pub const MAX_WAIT_US_LIMIT: u64 = 100_000;

impl GroupCommit {
    /// Each setting out of its range, as (field, rule).
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=MAX_BATCH_LIMIT).contains(&self.max_batch) {
            problems.push((
                "max_batch",
                format!("must be 1..={MAX_BATCH_LIMIT}, not {}", self.max_batch),
            ));
        }
        if !(1..=MAX_BATCH_BYTES_LIMIT).contains(&self.max_batch_bytes) {
            problems.push((
                "max_batch_bytes",
                format!(
                    "must be 1..={MAX_BATCH_BYTES_LIMIT}, not {}",
                    self.max_batch_bytes
                ),
            ));
        }
        if self.max_wait_us > MAX_WAIT_US_LIMIT {
            problems.push((
                "max_wait_us",
                format!(
                    "must be at most {MAX_WAIT_US_LIMIT} (100 ms), not {}",
                    self.max_wait_us
                ),
            ));
        }
        problems
    }

    /// The most writes a batch holds, 1 when grouping is off.
    fn batch_limit(&self) -> usize {
        if self.enabled {
            usize::try_from(self.max_batch).unwrap_or(usize::MAX).max(1)
        } else {
            1
        }
    }
}

/// A run's key as the tables hold it.
#[derive(Debug)]
pub(super) struct RunRow {
    pub(super) tenant_id: i64,
    pub(super) namespace_id: i64,
    pub(super) run_id: String,
}

/// A journal entry as `run_entries` holds it.
#[derive(Debug)]
pub(super) struct EntryRow {
    pub(super) revision: i64,
    pub(super) trigger_id: Option<String>,
    pub(super) submission_id: Option<String>,
    pub(super) json: String,
    pub(super) sha: String,
}

/// A run's head as `runs` holds it.
#[derive(Debug)]
pub(super) struct HeadRow {
    pub(super) revision: i64,
    pub(super) json: String,
    pub(super) sha: String,
}

/// One write, its documents already encoded by the caller (so the writer thread only runs
/// SQL).
#[derive(Debug)]
pub(super) enum Write {
    /// A new run with its first entry.
    Create {
        run: RunRow,
        head: HeadRow,
        entry: EntryRow,
    },
    /// A trigger: the head moves from `expected` to the entry's revision.
    Append {
        run: RunRow,
        expected: i64,
        head: HeadRow,
        entry: EntryRow,
    },
    /// A scenario, inserted unless one of its id exists.
    PutScenario {
        tenant_id: i64,
        namespace_id: i64,
        scenario_id: String,
        hash_json: String,
        spec_json: String,
        sha: String,
    },
    /// A data shape, inserted unless its version exists.
    Register {
        tenant_id: i64,
        namespace_id: i64,
        schema_id: String,
        version: String,
        json: String,
        sha: String,
    },
}

impl Write {
    /// The document bytes it writes, what `max_batch_bytes` counts.
    fn bytes(&self) -> u64 {
        let n = match self {
            Self::Create { head, entry, .. } | Self::Append { head, entry, .. } => {
                head.json.len() + entry.json.len()
            }
            Self::PutScenario { spec_json, .. } => spec_json.len(),
            Self::Register { json, .. } => json.len(),
        };
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

/// What a committed write did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// The run was created or the trigger appended.
    Done,
    /// A scenario or data shape: whether it was inserted (`false`: one existed).
    Inserted(bool),
}

impl Written {
    /// Whether a scenario or data shape was inserted.
    pub(super) fn inserted(self) -> Result<bool, StoreError> {
        match self {
            Self::Inserted(inserted) => Ok(inserted),
            Self::Done => Err(StoreError::Corrupt(
                "the writer answered a put with no insert outcome".to_owned(),
            )),
        }
    }
}

type Reply = oneshot::Sender<Result<Written, StoreError>>;

/// A write taken into a batch.
struct Pending {
    write: Write,
    audit: Vec<u8>,
    reply: Reply,
}

#[expect(
    clippy::large_enum_variant,
    reason = "a job moves once through the channel; boxing it would allocate for every write"
)]
enum Job {
    Write {
        write: Write,
        /// The audit lines the write commits with it (empty when it commits none).
        audit: Vec<u8>,
        reply: Reply,
    },
    /// Commit what came before, then stop.
    Close(oneshot::Sender<()>),
}

/// The handle callers hold; the thread stops when every handle is gone or on `close`.
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The writing connection: WAL with `synchronous = FULL` (a commit is durable before anyone is
/// answered), the same busy timeout and foreign keys as the readers.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "wal")?;
    conn.pragma_update(None, "synchronous", "full")?;
    conn.pragma_update(None, "foreign_keys", "on")?;
    Ok(conn)
}

impl Writer {
    /// Opens the writing connection to the (migrated) database at `path` and starts the thread.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the connection cannot be opened or the thread started.
    /// With a `trail`, the audit lines handed with the writes of a batch are written to it in
    /// one durable write after the batch commits, before anyone is answered.
    pub(super) fn start(
        path: &Path,
        settings: GroupCommit,
        trail: Option<Arc<JsonLinesAuditSink>>,
    ) -> Result<Self, StoreError> {
        let conn = connect(path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let (jobs, queue) = mpsc::channel();
        let alive = Arc::new(AtomicBool::new(true));
        let mut thread = Thread {
            path: path.to_path_buf(),
            conn: Some(conn),
            queue,
            settings,
            trail,
            alive: alive.clone(),
            commits: 0,
        };
        std::thread::Builder::new()
            .name("dg-sqlite-writer".to_owned())
            .spawn(move || thread.run())
            .map_err(|e| unavailable(format!("the SQLite writer thread: {e}")))?;
        Ok(Self { jobs, alive })
    }

    /// Hands `write` to the writer and waits for its commit (and the durable write of `audit`
    /// to the trail, when it succeeded). Dropping the future does not withdraw the write: it
    /// commits or fails with its batch, whole.
    pub(super) async fn submit(&self, write: Write, audit: Vec<u8>) -> Result<Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Write {
                write,
                audit,
                reply,
            })
            .map_err(|_| unavailable("the SQLite writer has stopped"))?;
        answer
            .await
            .map_err(|_| unavailable("the SQLite writer stopped before answering"))?
    }

    /// Whether the thread is still taking writes.
    pub(super) fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Commits what was handed over before this call, then stops the thread; later writes
    /// are refused as unavailable.
    pub(super) async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).is_ok() {
            let _ = finished.await;
        }
    }
}

/// Marks the writer stopped however its thread ends (a panic included).
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Thread {
    path: PathBuf,
    /// `None` after a failed batch until it is reopened.
    conn: Option<Connection>,
    queue: mpsc::Receiver<Job>,
    settings: GroupCommit,
    /// Where the audit lines of committed writes go.
    trail: Option<Arc<JsonLinesAuditSink>>,
    alive: Arc<AtomicBool>,
    /// Transactions committed.
    commits: u64,
}

impl Thread {
    fn run(&mut self) {
        let alive = Alive(self.alive.clone());
        let limit = self.settings.batch_limit();
        let max_bytes = self.settings.max_batch_bytes;
        let max_wait = Duration::from_micros(self.settings.max_wait_us);
        // The size of the last batch: how much company the next one waits for.
        let mut company = 1;
        let mut closing = None;
        while closing.is_none() {
            let Ok(first) = self.queue.recv() else { break };
            let mut batch = Vec::new();
            let mut bytes = 0;
            let mut next = Some(first);
            let deadline = Instant::now() + max_wait;
            while let Some(job) = next.take() {
                match job {
                    Job::Close(done) => {
                        closing = Some(done);
                        break;
                    }
                    Job::Write {
                        write,
                        audit,
                        reply,
                    } => {
                        bytes += write.bytes();
                        batch.push(Pending {
                            write,
                            audit,
                            reply,
                        });
                    }
                }
                if batch.len() >= limit || bytes >= max_bytes {
                    break;
                }
                next = match self.queue.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::TryRecvError::Empty) if batch.len() < company => self
                        .queue
                        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                        .ok(),
                    Err(_) => None,
                };
            }
            if !batch.is_empty() {
                company = batch.len();
                self.commit(batch);
            }
        }
        drop(self.conn.take());
        // Stopped before `close` returns, so `ready` answers as much from then on.
        drop(alive);
        if let Some(done) = closing {
            let _ = done.send(());
        }
    }

    /// Applies the batch in one transaction, writes the audit lines of its committed writes,
    /// and answers every job after both.
    fn commit(&mut self, batch: Vec<Pending>) {
        let results = match self.apply_all(&batch) {
            Ok(results) => {
                self.write_trail(&batch, &results);
                results
            }
            Err(e) => {
                // The whole batch failed (the disk, the file, a lock held past the timeout):
                // nothing of it was committed. Start over from a fresh connection.
                tracing::error!(error = %e, writes = batch.len(), "SQLite batch failed");
                self.conn = None;
                let message = format!("the SQLite commit failed: {e}");
                batch
                    .iter()
                    .map(|_| Err(StoreError::Unavailable(message.clone())))
                    .collect()
            }
        };
        for (pending, result) in batch.into_iter().zip(results) {
            let _ = pending.reply.send(result);
        }
    }

    /// Writes the audit lines of the batch's committed writes in one durable write. The writes
    /// are committed: a failure here is logged, never answered (the caller would retry a
    /// write that happened), as when the service's own audit append fails (ADR 0003).
    fn write_trail(&self, batch: &[Pending], results: &[Result<Written, StoreError>]) {
        let Some(trail) = &self.trail else { return };
        let committed = || {
            batch
                .iter()
                .zip(results)
                .filter(|(_, result)| result.is_ok())
                .map(|(pending, _)| pending.audit.as_slice())
        };
        let size = committed().map(<[u8]>::len).sum();
        if size == 0 {
            return;
        }
        let mut lines = Vec::with_capacity(size);
        committed().for_each(|audit| lines.extend_from_slice(audit));
        if let Err(e) = trail.write_lines(&lines) {
            tracing::error!(error = %e, writes = batch.len(), "audit events of committed writes not recorded");
        }
    }

    /// Each write's own result, or the error that fails the whole batch.
    fn apply_all(
        &mut self,
        batch: &[Pending],
    ) -> rusqlite::Result<Vec<Result<Written, StoreError>>> {
        if self.conn.is_none() {
            self.conn = Some(connect(&self.path)?);
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("opened above")
        };
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(batch.len());
        for Pending { write, .. } in batch {
            tx.prepare_cached("SAVEPOINT write")?.execute([])?;
            let result = apply(&tx, write)?;
            if result.is_err() {
                tx.prepare_cached("ROLLBACK TO write")?.execute([])?;
            }
            tx.prepare_cached("RELEASE write")?.execute([])?;
            results.push(result);
        }
        tx.commit()?;
        self.commits += 1;
        Ok(results)
    }
}

/// Whether the error is a unique or primary-key violation: a refusal of this write alone.
fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::ConstraintViolation
                && matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                )
    )
}

/// Runs one write's statements. `Ok(Err(_))` refuses this write alone (its savepoint is rolled
/// back); `Err(_)` fails the batch.
fn apply(conn: &Connection, write: &Write) -> rusqlite::Result<Result<Written, StoreError>> {
    match write {
        Write::Create { run, head, entry } => {
            let created = conn
                .prepare_cached(
                    "INSERT INTO runs (tenant_id, namespace_id, run_id, revision, head_json, doc_sha256)
                     VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    run.tenant_id,
                    run.namespace_id,
                    run.run_id,
                    head.revision,
                    head.json,
                    head.sha
                ])?;
            if created == 0 {
                return Ok(Err(StoreError::AlreadyExists {
                    what: "run",
                    id: run.run_id.clone(),
                }));
            }
            insert_entry(conn, run, entry)
        }
        Write::Append {
            run,
            expected,
            head,
            entry,
        } => {
            let updated = conn
                .prepare_cached(
                    "UPDATE runs SET revision = ?, head_json = ?, doc_sha256 = ?
                     WHERE tenant_id = ? AND namespace_id = ? AND run_id = ? AND revision = ?",
                )?
                .execute(params![
                    head.revision,
                    head.json,
                    head.sha,
                    run.tenant_id,
                    run.namespace_id,
                    run.run_id,
                    expected
                ])?;
            if updated == 0 {
                let actual: Option<i64> = conn
                    .prepare_cached(
                        "SELECT revision FROM runs WHERE tenant_id = ? AND namespace_id = ? AND run_id = ?",
                    )?
                    .query_row(params![run.tenant_id, run.namespace_id, run.run_id], |row| {
                        row.get(0)
                    })
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                return Ok(Err(match actual {
                    Some(actual) => StoreError::RevisionConflict {
                        expected: expected.unsigned_abs(),
                        actual: actual.unsigned_abs(),
                    },
                    None => StoreError::Invalid {
                        field: "run",
                        message: "no such run".to_owned(),
                    },
                }));
            }
            insert_entry(conn, run, entry)
        }
        Write::PutScenario {
            tenant_id,
            namespace_id,
            scenario_id,
            hash_json,
            spec_json,
            sha,
        } => conn
            .prepare_cached(
                "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_hash, spec_json, doc_sha256)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                tenant_id,
                namespace_id,
                scenario_id,
                hash_json,
                spec_json,
                sha
            ])
            .map(|n| Ok(Written::Inserted(n == 1))),
        Write::Register {
            tenant_id,
            namespace_id,
            schema_id,
            version,
            json,
            sha,
        } => conn
            .prepare_cached(
                "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, doc_sha256)
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            )?
            .execute(params![tenant_id, namespace_id, schema_id, version, json, sha])
            .map(|n| Ok(Written::Inserted(n == 1))),
    }
}

fn insert_entry(
    conn: &Connection,
    run: &RunRow,
    entry: &EntryRow,
) -> rusqlite::Result<Result<Written, StoreError>> {
    let result = conn
        .prepare_cached(
            "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, trigger_id, submission_id, entry_json, doc_sha256)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )?
        .execute(params![
            run.tenant_id,
            run.namespace_id,
            run.run_id,
            entry.revision,
            entry.trigger_id,
            entry.submission_id,
            entry.json,
            entry.sha
        ]);
    match result {
        Ok(_) => Ok(Ok(Written::Done)),
        Err(e) if is_unique_violation(&e) => {
            Ok(Err(match (&entry.trigger_id, &entry.submission_id) {
                (Some(t), _) => StoreError::DuplicateKey {
                    what: "trigger",
                    id: t.clone(),
                },
                (_, Some(s)) => StoreError::DuplicateKey {
                    what: "submission",
                    id: s.clone(),
                },
                _ => StoreError::Corrupt(format!(
                    "revision {} of run {} already exists",
                    entry.revision, run.run_id
                )),
            }))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{head, run_key, trigger_entry};
    use crate::run::RunKey;
    use crate::sqlite::{SqliteStore, entry_row, head_row, run_row};
    use crate::store::RunStore;

    fn create(key: &RunKey) -> Write {
        Write::Create {
            run: run_row(key),
            head: head_row(&head(key, 1)).unwrap(),
            entry: entry_row(&trigger_entry(key, 1, "init")).unwrap(),
        }
    }

    fn append(key: &RunKey, expected: u64, trigger: &str) -> Write {
        Write::Append {
            run: run_row(key),
            expected: i64::try_from(expected).unwrap(),
            head: head_row(&head(key, expected + 1)).unwrap(),
            entry: entry_row(&trigger_entry(key, expected + 1, trigger)).unwrap(),
        }
    }

    /// Runs the writer over `writes` queued before it starts, as it finds them under load;
    /// answers each write's result and the number of commits.
    fn run_queued(
        path: &Path,
        settings: GroupCommit,
        writes: Vec<Write>,
    ) -> (Vec<Result<Written, StoreError>>, u64) {
        let writes = writes.into_iter().map(|w| (w, Vec::new())).collect();
        run_queued_with_trail(path, settings, writes, None)
    }

    /// [`run_queued`] with an audit line for each write and a trail for them.
    fn run_queued_with_trail(
        path: &Path,
        settings: GroupCommit,
        writes: Vec<(Write, Vec<u8>)>,
        trail: Option<Arc<JsonLinesAuditSink>>,
    ) -> (Vec<Result<Written, StoreError>>, u64) {
        let (jobs, queue) = mpsc::channel();
        let mut answers = Vec::new();
        for (write, audit) in writes {
            let (reply, answer) = oneshot::channel();
            jobs.send(Job::Write {
                write,
                audit,
                reply,
            })
            .unwrap();
            answers.push(answer);
        }
        let (done, mut finished) = oneshot::channel();
        jobs.send(Job::Close(done)).unwrap();
        let mut thread = Thread {
            path: path.to_path_buf(),
            conn: Some(connect(path).unwrap()),
            queue,
            settings,
            trail,
            alive: Arc::new(AtomicBool::new(true)),
            commits: 0,
        };
        thread.run();
        finished.try_recv().expect("the close was answered");
        let results = answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("every write was answered"))
            .collect();
        (results, thread.commits)
    }

    async fn migrated() -> (tempfile::TempDir, PathBuf, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dg.db");
        let store = SqliteStore::open(&path).await.unwrap();
        (dir, path, store)
    }

    /// Writes refused on their own (a stale revision, a duplicate trigger after its head
    /// update, an existing run) roll back to their savepoints; the others in the same commit
    /// stand, and only their audit lines reach the trail, in order. With grouping off the
    /// results are the same, one commit each.
    #[tokio::test]
    async fn a_refused_write_leaves_the_rest_of_its_batch_whole() {
        for (settings, expected_commits) in [
            (GroupCommit::default(), 1),
            (
                GroupCommit {
                    enabled: false,
                    ..GroupCommit::default()
                },
                7,
            ),
        ] {
            let (_dir, path, store) = migrated().await;
            let (a, b) = (run_key(1, 1, "a"), run_key(1, 1, "b"));
            let writes = vec![
                create(&a),
                append(&a, 1, "t2"),
                append(&a, 1, "t3"),
                append(&a, 2, "t2"),
                create(&a),
                create(&b),
                append(&b, 1, "x"),
            ];
            let trail_path = path.with_extension("audit.jsonl");
            let trail = Arc::new(JsonLinesAuditSink::open(&trail_path).unwrap());
            let writes = writes
                .into_iter()
                .enumerate()
                .map(|(i, w)| (w, format!("{{\"write\":{i}}}\n").into_bytes()))
                .collect();
            let (results, commits) = run_queued_with_trail(&path, settings, writes, Some(trail));
            assert_eq!(commits, expected_commits, "{settings:?}");
            assert_eq!(
                std::fs::read_to_string(&trail_path).unwrap(),
                "{\"write\":0}\n{\"write\":1}\n{\"write\":5}\n{\"write\":6}\n",
                "{settings:?}"
            );
            assert_eq!(results[0], Ok(Written::Done));
            assert_eq!(results[1], Ok(Written::Done));
            assert_eq!(
                results[2],
                Err(StoreError::RevisionConflict {
                    expected: 1,
                    actual: 2
                })
            );
            assert_eq!(
                results[3],
                Err(StoreError::DuplicateKey {
                    what: "trigger",
                    id: "t2".to_owned()
                })
            );
            assert!(
                matches!(
                    results[4],
                    Err(StoreError::AlreadyExists { what: "run", .. })
                ),
                "{:?}",
                results[4]
            );
            assert_eq!(results[5], Ok(Written::Done));
            assert_eq!(results[6], Ok(Written::Done));
            // The duplicate's head update was rolled back with it.
            assert_eq!(store.head(&a).await.unwrap().unwrap().revision, 2);
            let revisions: Vec<u64> = store
                .entries(&a, 0, 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.revision)
                .collect();
            assert_eq!(revisions, [1, 2]);
            assert_eq!(store.head(&b).await.unwrap().unwrap().revision, 2);
        }
    }

    /// A batch closes at `max_batch` writes and at `max_batch_bytes`; one write larger than
    /// the byte bound still goes, alone.
    #[tokio::test]
    async fn batches_are_bounded_by_count_and_bytes() {
        let (_dir, path, _store) = migrated().await;
        let creates = |prefix: &str| {
            (0..10)
                .map(|i| create(&run_key(1, 1, &format!("{prefix}{i}"))))
                .collect::<Vec<_>>()
        };
        let by_count = GroupCommit {
            max_batch: 4,
            ..GroupCommit::default()
        };
        let (results, commits) = run_queued(&path, by_count, creates("c"));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(commits, 3, "10 writes in batches of at most 4");

        let one = creates("x").remove(0).bytes();
        let by_bytes = GroupCommit {
            max_batch_bytes: one * 2,
            ..GroupCommit::default()
        };
        let (results, commits) = run_queued(&path, by_bytes, creates("b"));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(commits, 5, "10 writes in batches of two writes' bytes");

        let tiny = GroupCommit {
            max_batch_bytes: 1,
            ..GroupCommit::default()
        };
        let (results, commits) = run_queued(&path, tiny, creates("t"));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(commits, 10, "each write alone, none refused for its size");
    }

    #[test]
    fn settings_out_of_range_are_named() {
        let bad = GroupCommit {
            enabled: true,
            max_batch: 0,
            max_batch_bytes: MAX_BATCH_BYTES_LIMIT + 1,
            max_wait_us: MAX_WAIT_US_LIMIT + 1,
        };
        let fields: Vec<&str> = bad.problems().iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["max_batch", "max_batch_bytes", "max_wait_us"]);
        assert!(GroupCommit::default().problems().is_empty());
    }

    /// A closed store refuses writes as unavailable; nothing hangs.
    #[tokio::test]
    async fn a_closed_writer_refuses_writes() {
        let (_dir, _path, store) = migrated().await;
        store.close().await;
        let key = run_key(1, 1, "late");
        let refused = store
            .create(
                &head(&key, 1),
                &trigger_entry(&key, 1, "init"),
                &crate::store::Effects::default(),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(store.ready().await.is_err());
    }
}
