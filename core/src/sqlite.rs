//! The embedded SQLite backend of the storage seams (sqlx, WAL, `synchronous=FULL`, migrations
//! embedded and applied on open).
//!
//! A run is a row in `runs` (the head) plus rows in `run_entries` (the journal). A trigger is
//! one transaction: a conditional `UPDATE` of the head on its expected revision and one
//! `INSERT` of the entry, so a crash leaves the run wholly at the old revision or wholly at the
//! new one, and a trigger costs the same at the 10,000th entry as at the first. Every stored
//! document carries a SHA-256 that is checked when it is read back.

use std::path::Path;
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Scenarios, runs and schemas in one SQLite database file.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
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
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
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
        let inserted = sqlx::query(
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_hash, spec_json, doc_sha256)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(record.tenant_id.as_i64())
        .bind(record.spec.namespace_id.as_i64())
        .bind(record.spec.scenario_id.as_str())
        .bind(&hash_json)
        .bind(&spec_json)
        .bind(&sha)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 1 {
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
        let (head_json, head_sha) = encode(head)?;
        let (entry_json, entry_sha) = encode(first)?;
        let k = &head.key;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let created = sqlx::query(
            "INSERT INTO runs (tenant_id, namespace_id, run_id, revision, head_json, doc_sha256)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(k.tenant_id.as_i64())
        .bind(k.namespace_id.as_i64())
        .bind(k.run_id.as_str())
        .bind(revision_i64(head.revision)?)
        .bind(&head_json)
        .bind(&head_sha)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if created == 0 {
            return Err(StoreError::AlreadyExists {
                what: "run",
                id: k.run_id.to_string(),
            });
        }
        insert_entry(&mut tx, k, first, &entry_json, &entry_sha).await?;
        tx.commit().await.map_err(unavailable)
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
        if entry.revision != expected_revision + 1 || head.revision != entry.revision {
            return Err(StoreError::Invalid {
                field: "revision",
                message: "entry and head must be at expected_revision + 1".to_owned(),
            });
        }
        let (head_json, head_sha) = encode(head)?;
        let (entry_json, entry_sha) = encode(entry)?;
        let k = &head.key;
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The write comes first so the transaction takes the write lock at once.
        let updated = sqlx::query(
            "UPDATE runs SET revision = ?, head_json = ?, doc_sha256 = ?
             WHERE tenant_id = ? AND namespace_id = ? AND run_id = ? AND revision = ?",
        )
        .bind(revision_i64(head.revision)?)
        .bind(&head_json)
        .bind(&head_sha)
        .bind(k.tenant_id.as_i64())
        .bind(k.namespace_id.as_i64())
        .bind(k.run_id.as_str())
        .bind(revision_i64(expected_revision)?)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if updated == 0 {
            let actual: Option<(i64,)> = sqlx::query_as(
                "SELECT revision FROM runs WHERE tenant_id = ? AND namespace_id = ? AND run_id = ?",
            )
            .bind(k.tenant_id.as_i64())
            .bind(k.namespace_id.as_i64())
            .bind(k.run_id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            return Err(match actual {
                Some((actual,)) => StoreError::RevisionConflict {
                    expected: expected_revision,
                    actual: actual.unsigned_abs(),
                },
                None => StoreError::Invalid {
                    field: "run",
                    message: "no such run".to_owned(),
                },
            });
        }
        insert_entry(&mut tx, k, entry, &entry_json, &entry_sha).await?;
        tx.commit().await.map_err(unavailable)
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

async fn insert_entry(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    key: &RunKey,
    entry: &JournalEntry,
    json: &str,
    sha: &str,
) -> Result<(), StoreError> {
    let result = sqlx::query(
        "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, trigger_id, submission_id, entry_json, doc_sha256)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.tenant_id.as_i64())
    .bind(key.namespace_id.as_i64())
    .bind(key.run_id.as_str())
    .bind(revision_i64(entry.revision)?)
    .bind(entry.trigger_id().map(TriggerId::as_str))
    .bind(entry.submission_id().map(SubmissionId::as_str))
    .bind(json)
    .bind(sha)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            Err(match (entry.trigger_id(), entry.submission_id()) {
                (Some(t), _) => StoreError::DuplicateKey {
                    what: "trigger",
                    id: t.to_string(),
                },
                (_, Some(s)) => StoreError::DuplicateKey {
                    what: "submission",
                    id: s.to_string(),
                },
                _ => StoreError::Corrupt(format!(
                    "revision {} of run {} already exists",
                    entry.revision, key.run_id
                )),
            })
        }
        Err(e) => Err(unavailable(e)),
    }
}

#[async_trait]
impl SchemaRegistry for SqliteStore {
    async fn register(
        &self,
        record: &DataShapeRecord,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        let (json, sha) = encode(record)?;
        let inserted = sqlx::query(
            "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, doc_sha256)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(record.tenant_id.as_i64())
        .bind(record.namespace_id.as_i64())
        .bind(record.schema_id.as_str())
        .bind(record.version.as_str())
        .bind(&json)
        .bind(&sha)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if inserted == 0 {
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
