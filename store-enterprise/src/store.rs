//! [`PgStore`]: the PostgreSQL backend of `ScenarioStore`, `RunStore` and `SchemaRegistry`.
//!
//! Every call is one transaction that first sets the tenant (`app.tenant_id`, transaction-local)
//! and then touches only rows of that tenant, by keys that lead with `tenant_id`; row-level
//! security makes any other row invisible and unwritable for the application role. A run is a
//! row in `runs` (the head) plus rows in `run_entries` (the journal): a trigger is a conditional
//! `UPDATE` of the head on its expected revision and one `INSERT` of the entry, both by primary
//! key, so its cost does not depend on the journal's length. The write's effects (usage and
//! audit events) are inserted in the same transaction, so they commit with it or not at all.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use decision_gate_core::ids::{
    NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TenantId, TriggerId,
};
use decision_gate_core::run::{JournalEntry, RunHead, RunKey};
use decision_gate_core::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, ScenarioRecord,
    ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use decision_gate_core::store::codec::{
    HeadWithEntryRow, decode, decode_scenario, encode, head_with_entry, page_from,
    parse_scenario_cursor, parse_schema_cursor, scenario_checksum, scenario_summary, schema_cursor,
};

use crate::codec::{constraint, is_unique_violation, store_error, to_i64, unavailable};
use crate::error::PgError;
use crate::trail::EffectColumns;
use crate::{check_app_role, check_schema};

/// Pool limits and timeouts of a [`PgStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing `Unavailable`.
    pub acquire_timeout: Duration,
    /// The server-side limit on one statement (`statement_timeout`), if any.
    pub statement_timeout: Option<Duration>,
    /// How long an idle connection is kept.
    pub idle_timeout: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(600)),
        }
    }
}

impl PoolConfig {
    /// Builds a lazy pool for `url`: no connection is opened until the first call, so a server
    /// can start while the database is down and report itself unready.
    ///
    /// # Errors
    /// [`PgError::Invalid`] when the URL does not parse.
    pub fn lazy_pool(&self, url: &str) -> Result<PgPool, PgError> {
        let mut options = PgConnectOptions::from_str(url).map_err(|e| PgError::Invalid {
            field: "database_url",
            message: e.to_string(),
        })?;
        if let Some(timeout) = self.statement_timeout {
            options = options.options([("statement_timeout", timeout.as_millis().to_string())]);
        }
        Ok(PgPoolOptions::new()
            // No ping before each use: it was one more round trip per statement (about an
            // eighth of the server's CPU per trigger). A connection that died is found by the
            // statement itself, which fails `Unavailable` (retryable), and is not reused.
            .test_before_acquire(false)
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .idle_timeout(self.idle_timeout)
            .connect_lazy_with(options))
    }
}

/// Scenarios, runs and data shapes in PostgreSQL, isolated per tenant by row-level security.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
    /// Whether writes record their usage (on unless metering is switched off).
    metered: bool,
}

impl PgStore {
    /// Connects as the application role at `app_url`, then refuses to serve when that role can
    /// bypass row-level security ([`check_app_role`]) or the schema is not the one this binary
    /// expects ([`check_schema`]).
    ///
    /// # Errors
    /// [`PgError::Unavailable`] when the database cannot be reached; [`PgError::UnsafeRole`],
    /// [`PgError::UnknownSchema`] or [`PgError::SchemaBehind`] from the checks.
    pub async fn connect(app_url: &str, config: &PoolConfig) -> Result<Self, PgError> {
        let pool = config.lazy_pool(app_url)?;
        check_app_role(&pool).await?;
        check_schema(&pool).await?;
        Ok(Self::from_pool(pool))
    }

    /// Wraps a pool without checking it (the caller ran the checks, or will).
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            metered: true,
        }
    }

    /// The same store, recording no usage with its writes (a deployment with metering switched
    /// off, never a production one); audit events are recorded as ever.
    #[must_use]
    pub fn unmetered(self) -> Self {
        Self {
            metered: false,
            ..self
        }
    }

    /// The events a write records: all of them, or only the audit events when unmetered.
    fn effect_columns(&self, effects: &Effects) -> Result<EffectColumns, StoreError> {
        if self.metered {
            EffectColumns::of_effects(effects)
        } else {
            EffectColumns::of([], &effects.audit)
        }
    }

    /// The pool.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction in `tenant`'s scope. The tenant is set in the `BEGIN` round trip
    /// itself (a simple-query batch), transaction-local, so it never outlives the transaction
    /// and is safe behind a transaction-pooling proxy. It is an integer formatted by Rust, never
    /// caller text.
    async fn begin(
        &self,
        tenant: TenantId,
        read_only: bool,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mode = if read_only { "READ ONLY" } else { "READ WRITE" };
        self.pool
            .begin_with(format!(
                "BEGIN {mode}; SELECT set_config('app.tenant_id', '{}', true)",
                tenant.as_i64()
            ))
            .await
            .map_err(unavailable)
    }
}

fn scope(tenant: TenantId, namespace: NamespaceId) -> (i64, i64) {
    (tenant.as_i64(), namespace.as_i64())
}

fn key_scope(key: &RunKey) -> (i64, i64) {
    scope(key.tenant_id, key.namespace_id)
}

fn limit_plus_one(page: &PageRequest) -> i64 {
    i64::from(page.limit) + 1
}

/// Records a write's usage and audit events in its transaction (`dg_record_effects`, the one
/// definition of those writes). A usage idempotency key already recorded for the tenant counts
/// once.
async fn insert_effects(
    tx: &mut Transaction<'static, Postgres>,
    columns: EffectColumns,
    scope: (i64, i64),
) -> Result<(), StoreError> {
    if columns.is_empty() {
        return Ok(());
    }
    columns
        .record(&mut **tx, scope.0)
        .await
        .map_err(|e| store_error(e, scope))
}

#[async_trait]
impl ScenarioStore for PgStore {
    async fn put(
        &self,
        record: &ScenarioRecord,
        effects: &Effects,
    ) -> Result<PutOutcome, StoreError> {
        let (spec_json, _) = encode(&record.spec)?;
        let (hash_json, _) = encode(&record.spec_hash)?;
        let sha = scenario_checksum(&hash_json, &spec_json);
        let scope = scope(record.tenant_id, record.spec.namespace_id);
        let mut tx = self.begin(record.tenant_id, false).await?;
        let inserted = sqlx::query(
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_hash, spec_json, doc_sha256)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(record.spec.scenario_id.as_str())
        .bind(&hash_json)
        .bind(&spec_json)
        .bind(&sha)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?
        .rows_affected();
        let outcome = if inserted == 1 {
            PutOutcome::Created
        } else {
            // The key is taken: identical content is an accepted no-op (its effects still
            // commit, the call happened); anything else is refused and nothing is written.
            let existing = scenario_row(&mut tx, scope, &record.spec.scenario_id).await?;
            match existing {
                Some((_, hash)) if hash == record.spec_hash => PutOutcome::Unchanged,
                _ => {
                    return Err(StoreError::AlreadyExists {
                        what: "scenario",
                        id: record.spec.scenario_id.to_string(),
                    });
                }
            }
        };
        insert_effects(&mut tx, self.effect_columns(effects)?, scope).await?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        Ok(outcome)
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        scenario_id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        let scope = scope(tenant_id, namespace_id);
        let mut tx = self.begin(tenant_id, true).await?;
        let row = scenario_row(&mut tx, scope, scenario_id).await?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        Ok(row.map(|(spec, spec_hash)| ScenarioRecord {
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
        let scope = scope(tenant_id, namespace_id);
        let mut tx = self.begin(tenant_id, true).await?;
        let rows: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT scenario_id, spec_hash, spec_json, doc_sha256 FROM scenarios
             WHERE tenant_id = $1 AND namespace_id = $2 AND scenario_id > $3
             ORDER BY scenario_id LIMIT $4",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(after.as_ref().map_or("", ScenarioId::as_str))
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        let items = rows
            .into_iter()
            .map(|row| scenario_summary(namespace_id, row))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(page_from(items, page.limit, |s| s.scenario_id.to_string()))
    }

    fn owns_effects(&self) -> bool {
        true
    }
}

/// The scenario stored under `scenario_id` in `scope`, checked against its checksum.
async fn scenario_row(
    tx: &mut Transaction<'static, Postgres>,
    scope: (i64, i64),
    scenario_id: &ScenarioId,
) -> Result<
    Option<(
        decision_gate_core::spec::ScenarioSpec,
        decision_gate_core::hashing::HashDigest,
    )>,
    StoreError,
> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT spec_hash, spec_json, doc_sha256 FROM scenarios
         WHERE tenant_id = $1 AND namespace_id = $2 AND scenario_id = $3",
    )
    .bind(scope.0)
    .bind(scope.1)
    .bind(scenario_id.as_str())
    .fetch_optional(&mut **tx)
    .await
    .map_err(|e| store_error(e, scope))?;
    row.map(|(hash_json, spec_json, sha)| decode_scenario(&hash_json, &spec_json, &sha))
        .transpose()
}

#[async_trait]
impl RunStore for PgStore {
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
        effects: &Effects,
    ) -> Result<(), StoreError> {
        let (head_json, head_sha) = encode(head)?;
        let (entry_json, entry_sha) = encode(first)?;
        let k = &head.key;
        let scope = key_scope(k);
        let mut tx = self.begin(k.tenant_id, false).await?;
        let created = sqlx::query(
            "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, revision, head_json, doc_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(k.run_id.as_str())
        .bind(head.scenario_id.as_str())
        .bind(to_i64("revision", head.revision)?)
        .bind(&head_json)
        .bind(&head_sha)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?
        .rows_affected();
        if created == 0 {
            return Err(StoreError::AlreadyExists {
                what: "run",
                id: k.run_id.to_string(),
            });
        }
        insert_entry(&mut tx, k, first, &entry_json, &entry_sha).await?;
        insert_effects(&mut tx, self.effect_columns(effects)?, scope).await?;
        tx.commit().await.map_err(|e| store_error(e, scope))
    }

    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
        let scope = key_scope(key);
        let mut tx = self.begin(key.tenant_id, true).await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT head_json, doc_sha256 FROM runs
             WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(key.run_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        row.map(|(json, sha)| decode("run head", &json, &sha))
            .transpose()
    }

    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        effects: &Effects,
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
        let effects = self.effect_columns(effects)?;
        let k = &head.key;
        let scope = key_scope(k);
        // One statement, so one round trip and its own transaction (migration 0003).
        let result: Result<(bool, Option<i64>), sqlx::Error> = sqlx::query_as(
            "SELECT appended, actual_revision FROM dg_append(
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                 $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(k.run_id.as_str())
        .bind(to_i64("revision", expected_revision)?)
        .bind(to_i64("revision", head.revision)?)
        .bind(&head_json)
        .bind(&head_sha)
        .bind(entry.trigger_id().map(TriggerId::as_str))
        .bind(entry.submission_id().map(SubmissionId::as_str))
        .bind(&entry_json)
        .bind(&entry_sha)
        .bind(effects.usage_tenant)
        .bind(effects.usage_key)
        .bind(effects.usage_namespace)
        .bind(effects.usage_metric)
        .bind(effects.usage_quantity)
        .bind(effects.audit_tenant)
        .bind(effects.audit_namespace)
        .bind(effects.audit_json)
        .bind(effects.audit_sha)
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok((true, _)) => Ok(()),
            Ok((false, Some(actual))) => Err(StoreError::RevisionConflict {
                expected: expected_revision,
                actual: actual.unsigned_abs(),
            }),
            Ok((false, None)) => Err(StoreError::Invalid {
                field: "run",
                message: "no such run".to_owned(),
            }),
            Err(e) => Err(entry_error(e, k, entry)),
        }
    }

    async fn head_and_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
        let scope = key_scope(key);
        // One statement, so one round trip (migration 0003).
        let row: Option<HeadWithEntryRow> = sqlx::query_as(
            "SELECT out_head_json, out_head_sha, out_entry_json, out_entry_sha
             FROM dg_run_and_trigger($1, $2, $3, $4)",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(key.run_id.as_str())
        .bind(trigger_id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| store_error(e, scope))?;
        head_with_entry(row)
    }

    async fn entry_for_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.entry_where(ENTRY_BY_TRIGGER, key, trigger_id.as_str())
            .await
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
        let scope = key_scope(key);
        let mut tx = self.begin(key.tenant_id, true).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT entry_json, doc_sha256 FROM run_entries
             WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3 AND revision > $4
             ORDER BY revision LIMIT $5",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(key.run_id.as_str())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        rows.iter()
            .map(|(json, sha)| decode("journal entry", json, sha))
            .collect()
    }

    fn owns_effects(&self) -> bool {
        true
    }
}

const ENTRY_BY_TRIGGER: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3 AND trigger_id = $4";
const ENTRY_BY_SUBMISSION: &str = "SELECT entry_json, doc_sha256 FROM run_entries
     WHERE tenant_id = $1 AND namespace_id = $2 AND run_id = $3 AND submission_id = $4";

impl PgStore {
    /// The entry of `key` matched by `query` (one of the `ENTRY_BY_*` statements) and `id`.
    async fn entry_where(
        &self,
        query: &'static str,
        key: &RunKey,
        id: &str,
    ) -> Result<Option<JournalEntry>, StoreError> {
        let scope = key_scope(key);
        let mut tx = self.begin(key.tenant_id, true).await?;
        let row: Option<(String, String)> = sqlx::query_as(query)
            .bind(scope.0)
            .bind(scope.1)
            .bind(key.run_id.as_str())
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        row.map(|(json, sha)| decode("journal entry", &json, &sha))
            .transpose()
    }
}

async fn insert_entry(
    tx: &mut Transaction<'static, Postgres>,
    key: &RunKey,
    entry: &JournalEntry,
    json: &str,
    sha: &str,
) -> Result<(), StoreError> {
    let scope = key_scope(key);
    let result = sqlx::query(
        "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, trigger_id, submission_id, entry_json, doc_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(scope.0)
    .bind(scope.1)
    .bind(key.run_id.as_str())
    .bind(to_i64("revision", entry.revision)?)
    .bind(entry.trigger_id().map(TriggerId::as_str))
    .bind(entry.submission_id().map(SubmissionId::as_str))
    .bind(json)
    .bind(sha)
    .execute(&mut **tx)
    .await;
    result.map(|_| ()).map_err(|e| entry_error(e, key, entry))
}

/// Maps the error of writing `entry`: a trigger or submission id already recorded is a
/// duplicate; another taken revision means the journal and the head disagree.
fn entry_error(e: sqlx::Error, key: &RunKey, entry: &JournalEntry) -> StoreError {
    if !is_unique_violation(&e) {
        return store_error(e, key_scope(key));
    }
    match constraint(&e) {
        Some("run_entries_trigger") => StoreError::DuplicateKey {
            what: "trigger",
            id: entry
                .trigger_id()
                .map(ToString::to_string)
                .unwrap_or_default(),
        },
        Some("run_entries_submission") => StoreError::DuplicateKey {
            what: "submission",
            id: entry
                .submission_id()
                .map(ToString::to_string)
                .unwrap_or_default(),
        },
        // The head moved to this revision only now, so an entry already holding it means the
        // journal and the head disagree.
        _ => StoreError::Corrupt(format!(
            "revision {} of run {} already exists",
            entry.revision, key.run_id
        )),
    }
}

#[async_trait]
impl SchemaRegistry for PgStore {
    async fn register(
        &self,
        record: &DataShapeRecord,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        let (json, sha) = encode(record)?;
        let scope = scope(record.tenant_id, record.namespace_id);
        let mut tx = self.begin(record.tenant_id, false).await?;
        let inserted = sqlx::query(
            "INSERT INTO data_shapes (tenant_id, namespace_id, schema_id, version, record_json, doc_sha256)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(record.schema_id.as_str())
        .bind(record.version.as_str())
        .bind(&json)
        .bind(&sha)
        .execute(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::AlreadyExists {
                what: "schema",
                id: format!("{}@{}", record.schema_id, record.version),
            });
        }
        insert_effects(&mut tx, self.effect_columns(effects)?, scope).await?;
        tx.commit().await.map_err(|e| store_error(e, scope))
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        let scope = scope(tenant_id, namespace_id);
        let mut tx = self.begin(tenant_id, true).await?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT record_json, doc_sha256 FROM data_shapes
             WHERE tenant_id = $1 AND namespace_id = $2 AND schema_id = $3 AND version = $4",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(schema_id.as_str())
        .bind(version.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
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
        let scope = scope(tenant_id, namespace_id);
        let mut tx = self.begin(tenant_id, true).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT record_json, doc_sha256 FROM data_shapes
             WHERE tenant_id = $1 AND namespace_id = $2 AND (schema_id, version) > ($3, $4)
             ORDER BY schema_id, version LIMIT $5",
        )
        .bind(scope.0)
        .bind(scope.1)
        .bind(&after_id)
        .bind(&after_version)
        .bind(limit_plus_one(page))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| store_error(e, scope))?;
        tx.commit().await.map_err(|e| store_error(e, scope))?;
        let items = rows
            .iter()
            .map(|(json, sha)| decode("data shape", json, sha))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page_from(items, page.limit, schema_cursor))
    }

    fn owns_effects(&self) -> bool {
        true
    }
}
