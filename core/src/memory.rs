//! In-memory backends of the storage seams: for embedding, tests and benchmarks. Nothing
//! survives the process.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::ids::{
    NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TenantId, TriggerId,
};
use crate::run::{JournalEntry, RunHead, RunKey};
use crate::store::codec::{page_from, parse_scenario_cursor, parse_schema_cursor, schema_cursor};
use crate::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, ScenarioRecord,
    ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};

#[derive(Debug)]
struct RunData {
    head: RunHead,
    entries: Vec<JournalEntry>,
    triggers: HashMap<TriggerId, usize>,
    submissions: HashMap<SubmissionId, usize>,
}

impl RunData {
    fn index(&mut self, entry: &JournalEntry) {
        let at = self.entries.len();
        if let Some(t) = entry.trigger_id() {
            self.triggers.insert(t.clone(), at);
        }
        if let Some(s) = entry.submission_id() {
            self.submissions.insert(s.clone(), at);
        }
    }
}

type ScopeKey = (TenantId, NamespaceId);

#[derive(Debug, Default)]
struct Inner {
    scenarios: BTreeMap<ScopeKey, BTreeMap<ScenarioId, ScenarioRecord>>,
    runs: HashMap<RunKey, RunData>,
    schemas: BTreeMap<ScopeKey, BTreeMap<(String, String), DataShapeRecord>>,
}

/// Scenarios, runs and schemas held in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    fn lock(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Unavailable("memory store lock poisoned".to_owned()))
    }
}

#[async_trait]
impl ScenarioStore for MemoryStore {
    async fn put(
        &self,
        record: &ScenarioRecord,
        _effects: &Effects,
    ) -> Result<PutOutcome, StoreError> {
        let mut inner = self.lock()?;
        let scope = inner
            .scenarios
            .entry((record.tenant_id, record.spec.namespace_id))
            .or_default();
        match scope.get(&record.spec.scenario_id) {
            Some(existing) if existing.spec_hash == record.spec_hash => Ok(PutOutcome::Unchanged),
            Some(_) => Err(StoreError::AlreadyExists {
                what: "scenario",
                id: record.spec.scenario_id.to_string(),
            }),
            None => {
                scope.insert(record.spec.scenario_id.clone(), record.clone());
                Ok(PutOutcome::Created)
            }
        }
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        scenario_id: &ScenarioId,
    ) -> Result<Option<ScenarioRecord>, StoreError> {
        Ok(self
            .lock()?
            .scenarios
            .get(&(tenant_id, namespace_id))
            .and_then(|s| s.get(scenario_id))
            .cloned())
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
        let inner = self.lock()?;
        let empty = BTreeMap::new();
        let scope = inner
            .scenarios
            .get(&(tenant_id, namespace_id))
            .unwrap_or(&empty);
        let start = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let items = scope
            .range((start, Bound::Unbounded))
            .map(|(_, r)| ScenarioSummary {
                scenario_id: r.spec.scenario_id.clone(),
                namespace_id: r.spec.namespace_id,
                spec_hash: r.spec_hash.clone(),
            });
        let items = items.take(page.limit as usize + 1).collect();
        Ok(page_from(items, page.limit, |s| s.scenario_id.to_string()))
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn create(
        &self,
        head: &RunHead,
        first: &JournalEntry,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        if inner.runs.contains_key(&head.key) {
            return Err(StoreError::AlreadyExists {
                what: "run",
                id: head.key.run_id.to_string(),
            });
        }
        let mut data = RunData {
            head: head.clone(),
            entries: Vec::new(),
            triggers: HashMap::new(),
            submissions: HashMap::new(),
        };
        data.index(first);
        data.entries.push(first.clone());
        inner.runs.insert(head.key.clone(), data);
        Ok(())
    }

    async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
        Ok(self.lock()?.runs.get(key).map(|d| d.head.clone()))
    }

    async fn append(
        &self,
        expected_revision: u64,
        head: RunHead,
        entry: JournalEntry,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let data = inner
            .runs
            .get_mut(&head.key)
            .ok_or_else(|| StoreError::Invalid {
                field: "run",
                message: "no such run".to_owned(),
            })?;
        if data.head.revision != expected_revision {
            return Err(StoreError::RevisionConflict {
                expected: expected_revision,
                actual: data.head.revision,
            });
        }
        if entry.revision != expected_revision + 1 || head.revision != entry.revision {
            return Err(StoreError::Invalid {
                field: "revision",
                message: "entry and head must be at expected_revision + 1".to_owned(),
            });
        }
        if let Some(t) = entry
            .trigger_id()
            .filter(|t| data.triggers.contains_key(*t))
        {
            return Err(StoreError::DuplicateKey {
                what: "trigger",
                id: t.to_string(),
            });
        }
        if let Some(s) = entry
            .submission_id()
            .filter(|s| data.submissions.contains_key(*s))
        {
            return Err(StoreError::DuplicateKey {
                what: "submission",
                id: s.to_string(),
            });
        }
        data.index(&entry);
        data.entries.push(entry);
        data.head = head;
        Ok(())
    }

    async fn entry_for_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        let inner = self.lock()?;
        Ok(inner
            .runs
            .get(key)
            .and_then(|d| d.triggers.get(trigger_id).map(|&i| d.entries[i].clone())))
    }

    async fn head_and_trigger(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
    ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
        let inner = self.lock()?;
        Ok(inner.runs.get(key).map_or((None, None), |d| {
            (
                Some(d.head.clone()),
                d.triggers.get(trigger_id).map(|&i| d.entries[i].clone()),
            )
        }))
    }

    async fn entry_for_submission(
        &self,
        key: &RunKey,
        submission_id: &SubmissionId,
    ) -> Result<Option<JournalEntry>, StoreError> {
        let inner = self.lock()?;
        Ok(inner.runs.get(key).and_then(|d| {
            d.submissions
                .get(submission_id)
                .map(|&i| d.entries[i].clone())
        }))
    }

    async fn entries(
        &self,
        key: &RunKey,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let inner = self.lock()?;
        let Some(data) = inner.runs.get(key) else {
            return Ok(Vec::new());
        };
        // Revisions are 1-based and dense, so revision r is at index r - 1.
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(data.entries.len());
        Ok(data.entries[start..]
            .iter()
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

#[async_trait]
impl SchemaRegistry for MemoryStore {
    async fn register(
        &self,
        record: &DataShapeRecord,
        _effects: &Effects,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock()?;
        let scope = inner
            .schemas
            .entry((record.tenant_id, record.namespace_id))
            .or_default();
        let key = (record.schema_id.to_string(), record.version.to_string());
        if scope.contains_key(&key) {
            return Err(StoreError::AlreadyExists {
                what: "schema",
                id: format!("{}@{}", key.0, key.1),
            });
        }
        scope.insert(key, record.clone());
        Ok(())
    }

    async fn get(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<Option<DataShapeRecord>, StoreError> {
        let inner = self.lock()?;
        let key = (schema_id.to_string(), version.to_string());
        Ok(inner
            .schemas
            .get(&(tenant_id, namespace_id))
            .and_then(|s| s.get(&key))
            .cloned())
    }

    async fn list(
        &self,
        tenant_id: TenantId,
        namespace_id: NamespaceId,
        page: &PageRequest,
    ) -> Result<Page<DataShapeRecord>, StoreError> {
        page.check()?;
        let after = page
            .cursor
            .as_deref()
            .map(parse_schema_cursor)
            .transpose()?;
        let inner = self.lock()?;
        let empty = BTreeMap::new();
        let scope = inner
            .schemas
            .get(&(tenant_id, namespace_id))
            .unwrap_or(&empty);
        let start = after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let items = scope
            .range((start, Bound::Unbounded))
            .take(page.limit as usize + 1);
        Ok(page_from(
            items.map(|(_, r)| r.clone()).collect(),
            page.limit,
            schema_cursor,
        ))
    }
}
