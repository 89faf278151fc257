//! Storage seams: scenarios, runs (an append-only journal) and data-shape schemas.
//!
//! Every write carries the operation's [`Effects`] (its usage and audit events). A backend that
//! keeps the usage ledger and audit trail in the same database writes them in the same
//! transaction as the operation and says so through `owns_effects`; the service then does not
//! hand them to the separate [`UsageMeter`](crate::access::UsageMeter) and
//! [`AuditSink`](crate::access::AuditSink). The open-source backends do not own them (ADR 0003).

pub mod codec;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::access::{AuditEvent, UsageEvent};
use crate::hashing::HashDigest;
use crate::ids::{
    NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TenantId, TriggerId,
};
use crate::run::{JournalEntry, RunHead, RunKey};
use crate::spec::ScenarioSpec;
use crate::time::Timestamp;

/// The largest page a list call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A storage failure, named by what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The key is taken by a different value; choose another id.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The run moved on since it was read; re-read and retry.
    #[error("run revision is {actual}, expected {expected}")]
    RevisionConflict {
        /// The revision the writer read.
        expected: u64,
        /// The revision stored.
        actual: u64,
    },
    /// Another entry of the run already holds this trigger or submission id; re-read it.
    #[error("{what} {id} is already recorded in this run")]
    DuplicateKey {
        /// `trigger` or `submission`.
        what: &'static str,
        /// The id.
        id: String,
    },
    /// The arguments are invalid (a bad cursor, a zero page size).
    #[error("{field}: {message}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The backend cannot be reached or timed out; retry later. Nothing was written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The write's usage would exceed a quota of its tenant (a store that owns its effects
    /// enforces the quotas in the write's transaction); nothing was written.
    #[error("{0}")]
    QuotaExceeded(crate::access::QuotaRefusal),
    /// Stored data fails an integrity check; refuse to use it.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The usage and audit events that belong to one write.
///
/// # Contract
/// For each write (`ScenarioStore::put`, `RunStore::create` and `append`,
/// `SchemaRegistry::register`), by what its seam's `owns_effects()` answers:
/// 1. When it owns them, a successful write (a `put` that finds the scenario `Unchanged`
///    included: the call happened) commits every usage and audit event with it, in one
///    transaction: once the write is visible, so are they, audit events in their order.
/// 2. When it owns them, a refused write (`AlreadyExists`, `RevisionConflict`, `DuplicateKey`)
///    commits none of them.
/// 3. When it owns them, a usage idempotency key already committed for the tenant counts once:
///    a later event with that key adds nothing, also when concurrent writes carry it, and the
///    write still succeeds with the rest of its effects.
/// 4. When it does not own them, it commits none of them (the service hands them to the
///    [`UsageMeter`](crate::access::UsageMeter) and [`AuditSink`](crate::access::AuditSink);
///    committing them too would count them twice), and a write's outcome does not depend on
///    them. A store with no ledger and audit trail of its own owns none (else the service would
///    drop them).
///
/// `crate::conformance::effects` (feature `conformance`) checks each clause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Usage to meter.
    pub usage: Vec<UsageEvent>,
    /// Events to audit.
    pub audit: Vec<AuditEvent>,
}

/// A page request: start after `cursor`, return at most `limit` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageRequest {
    /// The `next_token` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
    /// 1..=[`MAX_PAGE_SIZE`].
    pub limit: u32,
}

impl PageRequest {
    /// The first page of `limit` items.
    #[must_use]
    pub fn first(limit: u32) -> Self {
        Self {
            cursor: None,
            limit,
        }
    }

    /// Checks the limit.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when `limit` is 0 or above [`MAX_PAGE_SIZE`].
    pub fn check(&self) -> Result<(), StoreError> {
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            return Err(StoreError::Invalid {
                field: "limit",
                message: format!("must be between 1 and {MAX_PAGE_SIZE}, got {}", self.limit),
            });
        }
        Ok(())
    }
}

/// A page of items. `next_token` is `None` on the last page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page<T> {
    /// The items, in key order.
    pub items: Vec<T>,
    /// The cursor of the next page, or `None` when there is none.
    pub next_token: Option<String>,
}

/// A defined scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioRecord {
    /// The owning tenant.
    pub tenant_id: TenantId,
    /// The spec (its `namespace_id` is the record's namespace).
    pub spec: ScenarioSpec,
    /// The spec's digest.
    pub spec_hash: HashDigest,
}

/// A scenario as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSummary {
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// Its namespace.
    pub namespace_id: NamespaceId,
    /// Its spec digest.
    pub spec_hash: HashDigest,
}

/// Whether a put stored something new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    /// The record was stored.
    Created,
    /// An identical record was already stored; nothing changed.
    Unchanged,
}

/// Scenario specs per (tenant, namespace).
///
/// # Contract
/// 1. `put` of a new (tenant, namespace, scenario_id) stores it and returns `Created`.
/// 2. `put` of the same key with the same spec hash changes nothing and returns `Unchanged`.
/// 3. `put` of the same key with another spec hash fails with `AlreadyExists` and changes
///    nothing.
/// 4. The same scenario id in another tenant or namespace is a different scenario.
/// 5. `get` returns exactly what was put (spec and hash), or `None`.
/// 6. `list` returns summaries ordered by scenario id (byte order), at most `limit` per page,
///    continuing after `cursor`; `next_token` is `None` on the last page; a limit of 0 or a
///    cursor the store did not issue is `Invalid`.
///
/// # Errors
/// [`StoreError`] as above; `Unavailable` when the backend cannot be reached.
///
/// # Cancellation
/// Dropping a `put` future either stores the record or leaves no trace of it.
#[async_trait]
pub trait ScenarioStore: Send + Sync {
    /// Stores a scenario.
    async fn put(
        &self,
        record: &ScenarioRecord,
        effects: &Effects,
    ) -> Result<PutOutcome, StoreError>;
    /// Fetches a scenario.
    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        scenario_id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError>;
    /// Lists scenarios.
    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<ScenarioSummary>, StoreError>;
    /// Whether `put` also commits the effects (ADR 0003). Defaults to false.
    fn owns_effects(&self) -> bool {
        false
    }
}

/// Runs as a head plus an append-only journal.
///
/// # Contract
/// 1. `create` stores the head (revision 1) and the first entry (revision 1) together, or fails
///    with `AlreadyExists` when the key is taken, changing nothing.
/// 2. `append` stores the entry and replaces the head in one atomic step, only when the stored
///    revision equals `expected_revision` (else `RevisionConflict`, nothing changed). The new
///    head's revision and the entry's revision are `expected_revision + 1`.
/// 3. A trigger id or submission id already recorded in the run makes `append` fail with
///    `DuplicateKey`, changing nothing.
/// 4. `head` returns the latest committed head or `None`; never a head without its entry.
/// 5. `entry_for_trigger` / `entry_for_submission` find the entry holding that id, or `None`;
///    `head_and_trigger` returns what `head` and `entry_for_trigger` return, read at one point
///    (no entry without a head).
/// 6. `entries` returns entries with revision > `after`, ascending, at most `limit`.
/// 7. Appending does not rewrite earlier entries, and its cost does not grow with the journal.
/// 8. Runs are isolated per (tenant, namespace, run id).
///
/// # Errors
/// [`StoreError`] as above; `Unavailable` when the backend cannot be reached.
///
/// # Cancellation
/// Dropping an `append` future either commits the entry with its head or neither.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// Creates a run with its first journal entry.
    async fn create(
        &self,
        head: &RunHead,
        first: &JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError>;
    /// Reads a run's head.
    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError>;
    /// Appends one entry and replaces the head, if the run is still at `expected_revision`.
    /// Both are taken by value, for a backend that keeps them as they are (the caller decides
    /// again from a fresh read after any failure).
    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError>;
    /// The entry recording `trigger_id`.
    async fn entry_for_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<Option<JournalEntry>, StoreError>;
    /// A run's head and the entry recording `trigger_id`, read at one point: what deciding a
    /// trigger reads first. Required rather than defaulted, so a backend reads both in one
    /// step (one lock, one query, one round trip) and a decorator cannot forget to forward it.
    async fn head_and_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError>;
    /// The entry recording `submission_id`.
    async fn entry_for_submission(
        &self,
        key: &RunKey,
        submission_id: &SubmissionId,
    ) -> Result<Option<JournalEntry>, StoreError>;
    /// Entries after revision `after`, ascending.
    async fn entries(
        &self,
        key: &RunKey,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// Whether writes also commit the effects (ADR 0003). Defaults to false.
    fn owns_effects(&self) -> bool {
        false
    }
    /// Whether writes also commit the audit events of their effects, when they do not own
    /// all of them (ADR 0012). Defaults to [`RunStore::owns_effects`].
    ///
    /// # Contract
    /// A store that answers true while `owns_effects` is false writes the audit events of a
    /// successful `create` or `append` (in their order) durably before the write returns, and
    /// none of a refused one; the service then hands only the usage to the
    /// [`UsageMeter`](crate::access::UsageMeter).
    fn owns_audit(&self) -> bool {
        self.owns_effects()
    }
    /// Whether the store can serve requests now; a backend reached over a connection checks
    /// it. Defaults to ready.
    async fn ready(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// An optional signature over a data shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeSigning {
    /// Which key signed.
    pub key_id: String,
    /// The signature.
    pub signature: String,
    /// The algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// An immutable data shape: a JSON Schema (2020-12) registered under (id, version).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeRecord {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The namespace.
    pub namespace_id: NamespaceId,
    /// The schema.
    pub schema_id: SchemaId,
    /// The version.
    pub version: SchemaVersion,
    /// The JSON Schema document.
    pub schema: Value,
    /// What it describes.
    #[serde(default)]
    pub description: Option<String>,
    /// When it was registered, by the caller's clock.
    pub created_at: Timestamp,
    /// An optional signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<DataShapeSigning>,
}

/// Immutable data shapes per (tenant, namespace).
///
/// # Contract
/// 1. `register` stores a new (tenant, namespace, schema_id, version); registering an existing
///    key fails with `AlreadyExists` and changes nothing, even with identical content. When two
///    registrations race, exactly one succeeds.
/// 2. The same key under another tenant or namespace is a different record.
/// 3. `get` returns exactly what was registered, or `None`.
/// 4. `list` orders by (schema_id, version) as plain strings (`v1 < v10 < v2`), pages as in
///    [`ScenarioStore`] contract 6.
///
/// # Errors
/// [`StoreError`] as above; `Unavailable` when the backend cannot be reached.
///
/// # Cancellation
/// Dropping a `register` future either stores the record or leaves no trace of it.
#[async_trait]
pub trait SchemaRegistry: Send + Sync {
    /// Registers a data shape.
    async fn register(&self, record: &DataShapeRecord, effects: &Effects)
    -> Result<(), StoreError>;
    /// Fetches a data shape.
    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<Option<DataShapeRecord>, StoreError>;
    /// Lists data shapes.
    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<DataShapeRecord>, StoreError>;
    /// Whether `register` also commits the effects (ADR 0003). Defaults to false.
    fn owns_effects(&self) -> bool {
        false
    }
}

/// A runpack's key: one exported bundle of one run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunpackKey {
    /// The run.
    pub run: RunKey,
    /// The export's name, unique per run.
    pub export_id: String,
}

/// Stored runpacks (the bundle's files under one key).
///
/// # Contract
/// 1. `put_file` stores `bytes` at `path` under `key`; a path that is absolute, contains `..`
///    or would leave the store's root is refused with `Invalid`.
/// 2. `get_file` returns exactly the stored bytes (of the latest write), or `None`.
/// 3. `list_files` returns every stored path of `key`, sorted.
/// 4. Keys of different tenants never share storage.
///
/// # Errors
/// [`StoreError`] as above; `Unavailable` when the backend cannot be reached.
///
/// # Cancellation
/// Dropping a `put_file` future may leave the file absent but never partially written.
#[async_trait]
pub trait RunpackStore: Send + Sync {
    /// Stores one file of a runpack; returns its URI.
    async fn put_file(
        &self,
        key: &RunpackKey,
        path: &str,
        bytes: &[u8],
    ) -> Result<String, StoreError>;
    /// Reads one file of a runpack.
    async fn get_file(&self, key: &RunpackKey, path: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Lists the files of a runpack.
    async fn list_files(&self, key: &RunpackKey) -> Result<Vec<String>, StoreError>;
}
