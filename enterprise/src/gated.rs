//! [`GatedStore`]: a store (the Postgres store, on the enterprise server) behind a gate that
//! opens only once the start-up checks (a safe application role, the schema this binary
//! expects) have passed. A server that starts while the database is down serves, reports
//! itself unready and answers every call `unavailable` until the checks pass; it never touches
//! a database it has not checked. Open, it is the store it wraps: it passes the storage seams'
//! conformance suites like any backend.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use decision_gate_core::ids::{NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId};
use decision_gate_core::ids::{TenantId, TriggerId};
use decision_gate_core::run::{JournalEntry, RunHead, RunKey};
use decision_gate_core::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, ScenarioRecord,
    ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use decision_gate_store_enterprise::PgStore;

/// A store, closed until [`GatedStore::open`].
#[derive(Debug)]
pub struct GatedStore<S = PgStore> {
    inner: S,
    open: AtomicBool,
    /// Why the gate is closed, for `/readyz` and the `unavailable` message.
    reason: Mutex<String>,
}

impl<S> GatedStore<S> {
    /// A closed gate in front of `inner`.
    #[must_use]
    pub fn closed(inner: S, reason: impl Into<String>) -> Self {
        Self {
            inner,
            open: AtomicBool::new(false),
            reason: Mutex::new(reason.into()),
        }
    }

    /// The store behind the gate.
    #[must_use]
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Records why the gate is still closed.
    pub fn set_reason(&self, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock() {
            *r = reason.into();
        }
    }

    /// Opens the gate: the checks passed.
    pub fn open(&self) {
        self.open.store(true, Ordering::Release);
    }

    /// Whether the gate is open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<&S, StoreError> {
        if self.is_open() {
            return Ok(&self.inner);
        }
        let reason = self
            .reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|_| "start-up checks pending".to_owned());
        Err(StoreError::Unavailable(format!(
            "the database has not passed the start-up checks yet: {reason}"
        )))
    }
}

#[async_trait]
impl<S: ScenarioStore> ScenarioStore for GatedStore<S> {
    async fn put(
        &self,
        record: &ScenarioRecord,
        effects: &Effects,
    ) -> Result<PutOutcome, StoreError> {
        ScenarioStore::put(self.check()?, record, effects).await
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        scenario_id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        ScenarioStore::get(self.check()?, tenant_id, namespace_id, scenario_id).await
    }

    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<ScenarioSummary>, StoreError> {
        ScenarioStore::list(self.check()?, tenant_id, namespace_id, page).await
    }

    fn owns_effects(&self) -> bool {
        ScenarioStore::owns_effects(&self.inner)
    }
}

#[async_trait]
impl<S: RunStore> RunStore for GatedStore<S> {
    async fn create(
        &self,
        head: &RunHead,
        first: &JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        self.check()?.create(head, first, effects).await
    }

    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
        self.check()?.head(key).await
    }

    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        self.check()?
            .append(expected_revision, head, entry, effects)
            .await
    }

    async fn entry_for_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.check()?.entry_for_trigger(key, trigger_id).await
    }

    async fn head_and_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
        self.check()?.head_and_trigger(key, trigger_id).await
    }

    async fn entry_for_submission(
        &self,
        key: &RunKey,
        submission_id: &SubmissionId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        self.check()?.entry_for_submission(key, submission_id).await
    }

    async fn entries(
        &self,
        key: &RunKey,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        self.check()?.entries(key, after, limit).await
    }

    fn owns_effects(&self) -> bool {
        RunStore::owns_effects(&self.inner)
    }

    fn owns_audit(&self) -> bool {
        self.inner.owns_audit()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        self.check()?.ready().await
    }
}

#[async_trait]
impl<S: SchemaRegistry> SchemaRegistry for GatedStore<S> {
    async fn register(
        &self,
        record: &DataShapeRecord,
        effects: &Effects,
    ) -> Result<(), StoreError> {
        self.check()?.register(record, effects).await
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        SchemaRegistry::get(self.check()?, tenant_id, namespace_id, schema_id, version).await
    }

    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<DataShapeRecord>, StoreError> {
        SchemaRegistry::list(self.check()?, tenant_id, namespace_id, page).await
    }

    fn owns_effects(&self) -> bool {
        SchemaRegistry::owns_effects(&self.inner)
    }
}
