//! The embedded SQLite backend of the storage seams (WAL, `synchronous=FULL`, migrations
//! embedded and applied on open).
//!
//! A run is a row in `runs` (the head) plus rows in `run_entries` (the journal). A trigger is
//! a conditional `UPDATE` of the head on its expected revision and one `INSERT` of the entry in
//! one transaction, so a crash leaves the run wholly at the old revision or wholly at the new
//! one, and a trigger costs the same at the 10,000th entry as at the first. Every stored
//! document carries a SHA-256 that is checked when it is read back.
//!
//! Reads run on their caller's thread or the blocking pool (`readers.rs`); every write goes to
//! the one writer thread (`writer.rs`), which commits concurrent writes together (group commit,
//! ADR 0012).

mod readers;
mod writer;

pub use writer::{GroupCommit, MAX_BATCH_BYTES_LIMIT, MAX_BATCH_LIMIT, MAX_WAIT_US_LIMIT};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::access::JsonLinesAuditSink;
use crate::ids::{
    NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TenantId, TriggerId,
};
use crate::run::{JournalEntry, RunHead, RunKey};
use crate::store::codec::{
    HeadWithEntryRow, decode, decode_scenario, encode, head_with_entry, page_from,
    parse_scenario_cursor, parse_schema_cursor, scenario_checksum, scenario_summary, schema_cursor,
};
use crate::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, ScenarioRecord,
    ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use readers::Readers;
use writer::{EntryRow, HeadRow, RunRow, Write, Writer};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Scenarios, runs and schemas in one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The readers.
    readers: Arc<Readers>,
    /// The one writer.
    writer: Arc<Writer>,
    /// Whether the writer commits the audit events of run writes to an audit trail.
    owns_audit: bool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations, and
    /// groups concurrent writes with the default [`GroupCommit`] settings.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, GroupCommit::default()).await
    }

    /// Opens the database like [`SqliteStore::open`], grouping writes as `group_commit` says.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or migrated;
    /// [`StoreError::Invalid`] when a `group_commit` setting is out of range.
    pub async fn open_with(
        path: impl AsRef<Path>,
        group_commit: GroupCommit,
    ) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), group_commit, None).await
    }

    /// Opens the database like [`SqliteStore::open_with`]; the audit events of every run
    /// written (a run's start, a trigger, a submission) go to `trail` in the same batch as the
    /// write: one durable write of the file per commit, after it and before the callers are
    /// answered. The store then owns the audit of its run writes
    /// ([`RunStore::owns_audit`]); the service audits everything else through its sink,
    /// normally the same `trail`.
    ///
    /// # Errors
    /// As [`SqliteStore::open_with`].
    pub async fn open_with_trail(
        path: impl AsRef<Path>,
        group_commit: GroupCommit,
        trail: Arc<JsonLinesAuditSink>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(path.as_ref(), group_commit, Some(trail)).await
    }

    async fn open_inner(
        path: &Path,
        group_commit: GroupCommit,
        trail: Option<Arc<JsonLinesAuditSink>>,
    ) -> Result<Self, StoreError> {
        if let Some((field, message)) = group_commit.problems().into_iter().next() {
            return Err(StoreError::Invalid { field, message });
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is durable before the call is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // Created empty (a valid new database) with the owner's mode; SQLite gives the WAL and
        // its index the database file's mode.
        crate::at_rest::private_file_options()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|_| crate::at_rest::narrow_file(path))
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", path.display())))?;
        // Creation and migrations go through one sqlx connection, closed before the store
        // opens its own.
        let mut conn = options
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let migrated = MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")));
        drop(sqlx::Connection::close(conn).await);
        migrated?;
        let owns_audit = trail.is_some();
        let writer = Writer::start(path, group_commit, trail)?;
        Ok(Self {
            readers: Arc::new(Readers::new(path)),
            writer: Arc::new(writer),
            owns_audit,
        })
    }

    /// Commits the writes handed over so far, stops the writer and closes the readers; later
    /// calls are refused as unavailable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.readers.close();
    }
}

/// A run's key as the tables hold it.
fn run_row(key: &RunKey) -> RunRow {
    RunRow {
        tenant_id: key.tenant_id.as_i64(),
        namespace_id: key.namespace_id.as_i64(),
        run_id: key.run_id.to_string(),
    }
}

/// A head, encoded with its checksum.
fn head_row(head: &RunHead) -> Result<HeadRow, StoreError> {
    let (json, sha) = encode(head)?;
    Ok(HeadRow {
        revision: revision_i64(head.revision)?,
        json,
        sha,
    })
}

/// A journal entry, encoded with its checksum and its idempotency keys.
fn entry_row(entry: &JournalEntry) -> Result<EntryRow, StoreError> {
    let (json, sha) = encode(entry)?;
    Ok(EntryRow {
        revision: revision_i64(entry.revision)?,
        trigger_id: entry.trigger_id().map(ToString::to_string),
        submission_id: entry.submission_id().map(ToString::to_string),
        json,
        sha,
    })
}

fn limit_plus_one(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

#[async_trait]
impl ScenarioStore for SqliteStore {
    async fn put(
        &self,
        record: &ScenarioRecord,
        _effects: &Effects,
    ) -> Result<PutOutcome, StoreError> {
        let (spec_json, _) = encode(&record.spec)?;
        let (hash_json, _) = encode(&record.spec_hash)?;
        let sha = scenario_checksum(&hash_json, &spec_json);
        let inserted = self
            .writer
            .submit(
                Write::PutScenario {
                    tenant_id: record.tenant_id.as_i64(),
                    namespace_id: record.spec.namespace_id.as_i64(),
                    scenario_id: record.spec.scenario_id.to_string(),
                    hash_json,
                    spec_json,
                    sha,
                },
                Vec::new(),
            )
            .await?
            .inserted()?;
        if inserted {
            return Ok(PutOutcome::Created);
        }
        let existing = ScenarioStore::get(
            self,
            record.tenant_id,
            record.spec.namespace_id,
            &record.spec.scenario_id,
        )
        .await?;
        match existing {
            Some(e) if e.spec_hash == record.spec_hash => Ok(PutOutcome::Unchanged),
            _ => Err(StoreError::AlreadyExists {
                what: "scenario",
                id: record.spec.scenario_id.to_string(),
            }),
        }
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        scenario_id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        let row: Option<(String, String, String)> = self.readers.read(|conn| {
            readers::one(
                conn,
                "SELECT spec_hash, spec_json, doc_sha256 FROM scenarios
                 WHERE tenant_id = ?1 AND namespace_id = ?2 AND scenario_id = ?3",
                params![
                    tenant_id.as_i64(),
                    namespace_id.as_i64(),
                    scenario_id.as_str()
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })?;
        let Some((hash_json, spec_json, sha)) = row else {
            return Ok(None);
        };
        let (spec, spec_hash) = decode_scenario(&hash_json, &spec_json, &sha)?;
        Ok(Some(ScenarioRecord {
            tenant_id,
            spec,
            spec_hash,
        }))
    }

    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<ScenarioSummary>, StoreError> {
        page.check()?;
        let after = page
            .cursor
            .as_deref()
            .map(parse_scenario_cursor)
            .transpose()?;
        let after = after.map_or_else(String::new, |id| id.to_string());
        let limit = limit_plus_one(page);
        let items = self
            .readers
            .read_blocking(move |conn| {
                readers::all(
                    conn,
                    "SELECT scenario_id, spec_hash, spec_json, doc_sha256 FROM scenarios
                     WHERE tenant_id = ?1 AND namespace_id = ?2 AND scenario_id > ?3
                     ORDER BY scenario_id LIMIT ?4",
                    params![tenant_id.as_i64(), namespace_id.as_i64(), after, limit],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    |row| scenario_summary(namespace_id, row),
                )
            })
            .await?;
        Ok(page_from(items, page.limit, |s| s.scenario_id.to_string()))
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    async fn ready(&self) -> Result<(), StoreError> {
        if !self.writer.is_alive() {
            return Err(StoreError::Unavailable(
                "the SQLite writer has stopped".to_owned(),
            ));
        }
        self.readers
            .read(|conn| readers::one(conn, "SELECT 1", [], |_| Ok(())))
            .map(drop)
    }

    async fn create(
        &self,
        head: &RunHead,
        first: &JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(
                Write::Create {
                    run: run_row(&head.key),
                    head: head_row(head)?,
                    entry: entry_row(first)?,
                },
                self.audit_lines(effects)?,
            )
            .await
            .map(drop)
    }

    fn owns_audit(&self) -> bool {
        self.owns_audit
    }

    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
        self.readers.read(|conn| {
            readers::one(
                conn,
                "SELECT head_json, doc_sha256 FROM runs
                 WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3",
                run_params(key),
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?
            .map(|(json, sha)| decode("run head", &json, &sha))
            .transpose()
        })
    }

    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        let (head, entry) = (&head, &entry);
        if expected_revision.checked_add(1) != Some(entry.revision)
            || head.revision != entry.revision
        {
            return Err(StoreError::Invalid {
                field: "revision",
                message: "entry and head must be at expected_revision + 1".to_owned(),
            });
        }
        self.writer
            .submit(
                Write::Append {
                    run: run_row(&head.key),
                    expected: revision_i64(expected_revision)?,
                    head: head_row(head)?,
                    entry: entry_row(entry)?,
                },
                self.audit_lines(effects)?,
            )
            .await
            .map(drop)
    }

    async fn entry_for_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.entry_where(ENTRY_BY_TRIGGER, key, trigger_id.as_str())
            .await
    }

    async fn head_and_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
        self.readers.read(|conn| {
            let (tenant, namespace, run) = run_params(key);
            let row: Option<HeadWithEntryRow> = readers::one(
                conn,
                "SELECT r.head_json, r.doc_sha256, e.entry_json, e.doc_sha256 FROM runs r
                 LEFT JOIN run_entries e
                        ON e.tenant_id = r.tenant_id AND e.namespace_id = r.namespace_id
                       AND e.run_id = r.run_id AND e.trigger_id = ?4
                 WHERE r.tenant_id = ?1 AND r.namespace_id = ?2 AND r.run_id = ?3",
                params![tenant, namespace, run, trigger_id.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            head_with_entry(row)
        })
    }

    async fn entry_for_submission(
        &self,
        key: &RunKey,
        submission_id: &SubmissionId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.entry_where(ENTRY_BY_SUBMISSION, key, submission_id.as_str())
            .await
    }

    async fn entries(
        &self,
        key: &RunKey,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let (tenant, namespace, run) = run_params(key);
        let run = run.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.readers
            .read_blocking(move |conn| {
                readers::all(
                    conn,
                    "SELECT entry_json, doc_sha256 FROM run_entries
                     WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3 AND revision > ?4
                     ORDER BY revision LIMIT ?5",
                    params![tenant, namespace, run, after, i64::from(limit)],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                    |(json, sha)| decode("journal entry", &json, &sha),
                )
            })
            .await
    }
}

const ENTRY_BY_TRIGGER: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3 AND trigger_id = ?4";
const ENTRY_BY_SUBMISSION: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = ?1 AND namespace_id = ?2 AND run_id = ?3 AND submission_id = ?4";

/// A run's key as the statements bind it (`?1`, `?2`, `?3`).
fn run_params(key: &RunKey) -> (i64, i64, &str) {
    (
        key.tenant_id.as_i64(),
        key.namespace_id.as_i64(),
        key.run_id.as_str(),
    )
}

impl SqliteStore {
    /// The audit lines a run write commits with it: its effects' events when the store owns
    /// their audit, else none.
    fn audit_lines(&self, effects: &Effects) -> Result<Vec<u8>, StoreError> {
        if !self.owns_audit || effects.audit.is_empty() {
            return Ok(Vec::new());
        }
        JsonLinesAuditSink::encode(&effects.audit).map_err(|e| StoreError::Invalid {
            field: "audit",
            message: e.to_string(),
        })
    }

    /// The entry of `key` matched by `query` (one of the `ENTRY_BY_*` statements) and `id`.
    async fn entry_where(
        &self,
        query: &'static str,
        key: &RunKey,
        id: &str,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.readers.read(|conn| {
            let (tenant, namespace, run) = run_params(key);
            readers::one(conn, query, params![tenant, namespace, run, id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .map(|(json, sha)| decode("journal entry", &json, &sha))
            .transpose()
        })
    }
}

fn revision_i64(revision: u64) -> Result<i64, StoreError> {
    i64::try_from(revision).map_err(|_| StoreError::Invalid {
        field: "revision",
        message: "out of range".to_owned(),
    })
}

#[async_trait]
impl SchemaRegistry for SqliteStore {
    async fn register(
        &self,
        record: &DataShapeRecord,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        let (json, sha) = encode(record)?;
        let inserted = self
            .writer
            .submit(
                Write::Register {
                    tenant_id: record.tenant_id.as_i64(),
                    namespace_id: record.namespace_id.as_i64(),
                    schema_id: record.schema_id.to_string(),
                    version: record.version.to_string(),
                    json,
                    sha,
                },
                Vec::new(),
            )
            .await?
            .inserted()?;
        if !inserted {
            return Err(StoreError::AlreadyExists {
                what: "schema",
                id: format!("{}@{}", record.schema_id, record.version),
            });
        }
        Ok(())
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        self.readers.read(|conn| {
            readers::one(
                conn,
                "SELECT record_json, doc_sha256 FROM data_shapes
                 WHERE tenant_id = ?1 AND namespace_id = ?2 AND schema_id = ?3 AND version = ?4",
                params![
                    tenant_id.as_i64(),
                    namespace_id.as_i64(),
                    schema_id.as_str(),
                    version.as_str()
                ],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
            )?
            .map(|(json, sha)| decode("data shape", &json, &sha))
            .transpose()
        })
    }

    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<DataShapeRecord>, StoreError> {
        page.check()?;
        let (after_id, after_version) = page
            .cursor
            .as_deref()
            .map(parse_schema_cursor)
            .transpose()?
            .unwrap_or_default();
        let limit = limit_plus_one(page);
        let items = self
            .readers
            .read_blocking(move |conn| {
                readers::all(
                    conn,
                    "SELECT record_json, doc_sha256 FROM data_shapes
                     WHERE tenant_id = ?1 AND namespace_id = ?2 AND (schema_id, version) > (?3, ?4)
                     ORDER BY schema_id, version LIMIT ?5",
                    params![
                        tenant_id.as_i64(),
                        namespace_id.as_i64(),
                        after_id,
                        after_version,
                        limit
                    ],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                    |(json, sha)| decode("data shape", &json, &sha),
                )
            })
            .await?;
        Ok(page_from(items, page.limit, schema_cursor))
    }
}
