//! The embedded SQLite backend of the storage seams (WAL, `synchronous=FULL`, migrations
//! embedded and applied on open).
//!
//! A run is a row in `runs` (the head) plus rows in `run_entries` (the journal). A trigger is
//! a conditional `UPDATE` of the head on its expected revision and one `INSERT` of the entry in
//! one transaction, so a crash leaves the run wholly at the old revision or wholly at the new
//! one, and a trigger costs the same at the 10,000th entry as at the first. Every stored
//! document carries a SHA-256 that is checked when it is read back.
//!
//! Reads go through a pool of sqlx connections; every write goes to the one writer thread
//! (`writer.rs`), which commits concurrent writes together (group commit, ADR 0012).

mod writer;

pub use writer::{GroupCommit, MAX_BATCH_BYTES_LIMIT, MAX_BATCH_LIMIT, MAX_WAIT_US_LIMIT};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::ids::{
    NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TenantId, TriggerId,
};
use crate::run::{JournalEntry, RunHead, RunKey};
use crate::store::codec::{
    HeadWithEntryRow, decode, decode_scenario, encode, head_with_entry, page_from,
    parse_scenario_cursor, parse_schema_cursor, scenario_checksum, schema_cursor,
};
use crate::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, ScenarioRecord,
    ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use writer::{EntryRow, HeadRow, RunRow, Write, Writer};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Scenarios, runs and schemas in one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    /// The readers.
    pool: SqlitePool,
    /// The one writer.
    writer: Arc<Writer>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
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
        if let Some((field, message)) = group_commit.problems().into_iter().next() {
            return Err(StoreError::Invalid { field, message });
        }
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is durable before the call is acknowledged.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let writer = Writer::start(path.as_ref(), group_commit)?;
        Ok(Self {
            pool,
            writer: Arc::new(writer),
        })
    }

    /// Commits the writes handed over so far, stops the writer and closes the readers; later
    /// calls are refused as unavailable.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
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
            .submit(Write::PutScenario {
                tenant_id: record.tenant_id.as_i64(),
                namespace_id: record.spec.namespace_id.as_i64(),
                scenario_id: record.spec.scenario_id.to_string(),
                hash_json,
                spec_json,
                sha,
            })
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
        let row: Option<(String, String, String)> = sqlx::query_as(
            "SELECT spec_hash, spec_json, doc_sha256 FROM scenarios WHERE tenant_id = ? AND namespace_id = ? AND scenario_id = ?",
        )
        .bind(tenant_id.as_i64())
        .bind(namespace_id.as_i64())
        .bind(scenario_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
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
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT scenario_id, spec_hash, spec_json, doc_sha256 FROM scenarios
             WHERE tenant_id = ? AND namespace_id = ? AND scenario_id > ? ORDER BY scenario_id LIMIT ?",
        )
        .bind(tenant_id.as_i64())
        .bind(namespace_id.as_i64())
        .bind(after.as_ref().map_or("", ScenarioId::as_str))
        .bind(limit_plus_one(page))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let items = rows
            .into_iter()
            .map(|(id, hash_json, spec_json, sha)| {
                let (_, spec_hash) = decode_scenario(&hash_json, &spec_json, &sha)?;
                Ok(ScenarioSummary {
                    scenario_id: ScenarioId::new(id)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    namespace_id,
                    spec_hash,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
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
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn create(
        &self,
        head: &RunHead,
        first: &JournalEntry,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        self.writer
            .submit(Write::Create {
                run: run_row(&head.key),
                head: head_row(head)?,
                entry: entry_row(first)?,
            })
            .await
            .map(drop)
    }

    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT head_json, doc_sha256 FROM runs WHERE tenant_id = ? AND namespace_id = ? AND run_id = ?")
                .bind(key.tenant_id.as_i64())
                .bind(key.namespace_id.as_i64())
                .bind(key.run_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.map(|(json, sha)| decode("run head", &json, &sha))
            .transpose()
    }

    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        _effects: &Effects,
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
            .submit(Write::Append {
                run: run_row(&head.key),
                expected: revision_i64(expected_revision)?,
                head: head_row(head)?,
                entry: entry_row(entry)?,
            })
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
        let row: Option<HeadWithEntryRow> = sqlx::query_as(
            "SELECT r.head_json, r.doc_sha256, e.entry_json, e.doc_sha256 FROM runs r
             LEFT JOIN run_entries e
                    ON e.tenant_id = r.tenant_id AND e.namespace_id = r.namespace_id
                   AND e.run_id = r.run_id AND e.trigger_id = ?
             WHERE r.tenant_id = ? AND r.namespace_id = ? AND r.run_id = ?",
        )
        .bind(trigger_id.as_str())
        .bind(key.tenant_id.as_i64())
        .bind(key.namespace_id.as_i64())
        .bind(key.run_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        head_with_entry(row)
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
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT entry_json, doc_sha256 FROM run_entries
             WHERE tenant_id = ? AND namespace_id = ? AND run_id = ? AND revision > ? ORDER BY revision LIMIT ?",
        )
        .bind(key.tenant_id.as_i64())
        .bind(key.namespace_id.as_i64())
        .bind(key.run_id.as_str())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|(json, sha)| decode("journal entry", json, sha))
            .collect()
    }
}

const ENTRY_BY_TRIGGER: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = ? AND namespace_id = ? AND run_id = ? AND trigger_id = ?";
const ENTRY_BY_SUBMISSION: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = ? AND namespace_id = ? AND run_id = ? AND submission_id = ?";

impl SqliteStore {
    /// The entry of `key` matched by `query` (one of the `ENTRY_BY_*` statements) and `id`.
    async fn entry_where(
        &self,
        query: &'static str,
        key: &RunKey,
        id: &str,
    ) -> Result<Option<JournalEntry>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(query)
            .bind(key.tenant_id.as_i64())
            .bind(key.namespace_id.as_i64())
            .bind(key.run_id.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.map(|(json, sha)| decode("journal entry", &json, &sha))
            .transpose()
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
            .submit(Write::Register {
                tenant_id: record.tenant_id.as_i64(),
                namespace_id: record.namespace_id.as_i64(),
                schema_id: record.schema_id.to_string(),
                version: record.version.to_string(),
                json,
                sha,
            })
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
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT record_json, doc_sha256 FROM data_shapes
             WHERE tenant_id = ? AND namespace_id = ? AND schema_id = ? AND version = ?",
        )
        .bind(tenant_id.as_i64())
        .bind(namespace_id.as_i64())
        .bind(schema_id.as_str())
        .bind(version.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|(json, sha)| decode("data shape", &json, &sha))
            .transpose()
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
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT record_json, doc_sha256 FROM data_shapes
             WHERE tenant_id = ? AND namespace_id = ? AND (schema_id, version) > (?, ?)
             ORDER BY schema_id, version LIMIT ?",
        )
        .bind(tenant_id.as_i64())
        .bind(namespace_id.as_i64())
        .bind(&after_id)
        .bind(&after_version)
        .bind(limit_plus_one(page))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let items = rows
            .iter()
            .map(|(json, sha)| decode("data shape", json, sha))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_from(items, page.limit, schema_cursor))
    }
}
