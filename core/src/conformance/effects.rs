//! [`Effects`] contract checks: a store's writes and the usage and audit events they carry
//! (ADR 0003).
//!
//! One backend serves all three write seams, so the factory returns the store itself, and,
//! when the backend keeps a usage ledger and an audit trail of its own (Postgres:
//! `usage_events`, `audit_events`), an [`EffectsProbe`] that reads them. Each check asks every
//! seam whether it owns its effects and holds it to the clause that answer selects: clauses 1 to
//! 3 for a seam that says yes, clause 4 for one that says no.
//!
//! A backend that owns its effects reads its ledger past its own tenant isolation (an owner
//! connection for Postgres under row-level security), for example:
//!
//! ```text
//! struct Ledger(PgPool);
//!
//! #[async_trait]
//! impl EffectsProbe for Ledger {
//!     async fn committed(&self, tenant_id: TenantId) -> Effects {
//!         // usage: SELECT namespace_id, metric, quantity, idempotency_key FROM usage_events
//!         //        WHERE tenant_id = $1
//!         // audit: SELECT event_json FROM audit_events WHERE tenant_id = $1 ORDER BY event_id
//!     }
//! }
//!
//! async fn effects_fixture() -> EffectsFixture<PgStore> {
//!     let db = ScratchDb::migrated().await;
//!     EffectsFixture {
//!         store: Arc::new(db.app_store().await),
//!         ledger: Some(Arc::new(Ledger(db.owner_pool().await))),
//!     }
//! }
//!
//! decision_gate_core::effects_conformance!(effects_fixture);
//! ```
//!
//! The checks write in tenant 1 (namespaces 1 and 2) and read its ledger only.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::schema_registry::shape;
use super::{head, namespace, run_key, scenario, submission_entry, tenant, trigger_entry};
use crate::access::{Action, AuditEvent, AuditOutcome, UsageEvent, UsageMetric};
use crate::ids::TenantId;
use crate::run::RunKey;
use crate::store::{Effects, PutOutcome, RunStore, ScenarioStore, SchemaRegistry, StoreError};

/// Reads the usage and audit events a store committed with its writes.
#[async_trait]
pub trait EffectsProbe: Send + Sync {
    /// What is committed for `tenant_id`: one usage event per idempotency key (as first
    /// committed), in any order, and the audit events in commit order.
    async fn committed(&self, tenant_id: TenantId) -> Effects;
}

/// A store and, when it keeps its own ledger and audit trail, how to read them.
pub struct EffectsFixture<S> {
    /// A fresh, empty store serving the three write seams.
    pub store: Arc<S>,
    /// Reads what the store committed as effects. `None` for a store with no ledger or audit
    /// trail of its own (memory, SQLite): every seam must then report `owns_effects() == false`
    /// (contract 4), and the checks hold its writes to succeed or fail whatever their effects.
    pub ledger: Option<Arc<dyn EffectsProbe>>,
}

/// The effects of one write in tenant 1, namespace `ns`: a tool call (key `{label}/tool_calls`),
/// two runs started (key `{label}/runs_started`) and one success audit event on `label`.
#[must_use]
pub fn effects(ns: u64, label: &str) -> Effects {
    let usage = |metric, quantity, name: &str| UsageEvent {
        tenant_id: tenant(1),
        namespace_id: namespace(ns),
        metric,
        quantity,
        idempotency_key: format!("{label}/{name}"),
    };
    Effects {
        usage: vec![
            usage(UsageMetric::ToolCalls, 1, "tool_calls"),
            usage(UsageMetric::RunsStarted, 2, "runs_started"),
        ],
        audit: vec![AuditEvent {
            principal: "agent".into(),
            action: Action::ScenarioNext,
            tenant_id: tenant(1),
            namespace_id: namespace(ns),
            resource: label.to_owned(),
            outcome: AuditOutcome::Success,
            request_id: Some(format!("req-{label}")),
            correlation_id: None,
            request_hash: None,
            credential: None,
        }],
    }
}

/// Which seams of a store own their effects.
#[derive(Clone, Copy, Debug)]
struct Owns {
    runs: bool,
    scenarios: bool,
    schemas: bool,
}

impl Owns {
    fn of<S: RunStore + ScenarioStore + SchemaRegistry>(store: &S) -> Self {
        Self {
            runs: RunStore::owns_effects(store),
            scenarios: ScenarioStore::owns_effects(store),
            schemas: SchemaRegistry::owns_effects(store),
        }
    }
}

/// What tenant 1's ledger should hold.
#[derive(Debug, Default)]
struct Expected {
    usage: BTreeMap<String, UsageEvent>,
    audit: Vec<AuditEvent>,
}

impl Expected {
    /// A write succeeded: a seam that owns its effects committed them.
    fn commit(&mut self, owned: bool, effects: &Effects) {
        if !owned {
            return;
        }
        for u in &effects.usage {
            self.usage
                .entry(u.idempotency_key.clone())
                .or_insert_with(|| u.clone());
        }
        self.audit.extend(effects.audit.iter().cloned());
    }
}

/// Compares tenant 1's ledger with what it should hold.
async fn assert_ledger(
    ledger: Option<&dyn EffectsProbe>,
    expected: &Expected,
    owned: bool,
    clause: &str,
    after: &str,
) {
    let Some(ledger) = ledger else {
        return;
    };
    let committed = ledger.committed(tenant(1)).await;
    let mut usage = committed.usage;
    usage.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    let clause = if owned {
        clause
    } else {
        "clause 4: a seam that does not own its effects commits none of them"
    };
    assert_eq!(
        usage,
        expected.usage.values().cloned().collect::<Vec<_>>(),
        "{clause} (usage, after {after})"
    );
    assert_eq!(
        committed.audit, expected.audit,
        "{clause} (audit, after {after})"
    );
}

/// Clause 1: every successful write (a run's create, a trigger or submission append, a scenario
/// put that creates or finds it unchanged, a schema registration) commits all its usage and
/// audit events with it, audit events in order.
pub async fn successful_writes_commit_their_effects<S>(fixture: EffectsFixture<S>)
where
    S: RunStore + ScenarioStore + SchemaRegistry + 'static,
{
    let (store, ledger) = (fixture.store.as_ref(), fixture.ledger.as_deref());
    let owns = Owns::of(store);
    let mut expected = Expected::default();
    let key = run_key(1, 1, "r");
    let clause = "clause 1: a successful write commits its effects";

    let e = effects(1, "create");
    store
        .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &e)
        .await
        .expect("create");
    expected.commit(owns.runs, &e);
    assert_ledger(ledger, &expected, owns.runs, clause, "create").await;

    let e = effects(1, "trigger");
    store
        .append(1, head(&key, 2), trigger_entry(&key, 2, "t"), &e)
        .await
        .expect("append a trigger");
    expected.commit(owns.runs, &e);
    assert_ledger(ledger, &expected, owns.runs, clause, "a trigger append").await;

    let e = effects(1, "submission");
    store
        .append(2, head(&key, 3), submission_entry(&key, 3, "s"), &e)
        .await
        .expect("append a submission");
    expected.commit(owns.runs, &e);
    assert_ledger(ledger, &expected, owns.runs, clause, "a submission append").await;

    let e = effects(1, "define");
    assert_eq!(
        store.put(&scenario("s", 1, "1"), &e).await,
        Ok(PutOutcome::Created)
    );
    expected.commit(owns.scenarios, &e);
    assert_ledger(ledger, &expected, owns.scenarios, clause, "a put").await;

    let e = effects(1, "define-again");
    assert_eq!(
        store.put(&scenario("s", 1, "1"), &e).await,
        Ok(PutOutcome::Unchanged)
    );
    expected.commit(owns.scenarios, &e);
    assert_ledger(
        ledger,
        &expected,
        owns.scenarios,
        "clause 1: an unchanged put succeeded and commits its effects",
        "an unchanged put",
    )
    .await;

    let e = effects(1, "register");
    store
        .register(&shape(1, 1, "d", "v1"), &e)
        .await
        .expect("register");
    expected.commit(owns.schemas, &e);
    assert_ledger(ledger, &expected, owns.schemas, clause, "a registration").await;
}

/// Clause 2: a refused write (a run or schema that exists, a stale revision, a trigger or
/// submission id already recorded, another spec under a defined scenario id) commits none of
/// its effects.
pub async fn refused_writes_commit_nothing<S>(fixture: EffectsFixture<S>)
where
    S: RunStore + ScenarioStore + SchemaRegistry + 'static,
{
    let (store, ledger) = (fixture.store.as_ref(), fixture.ledger.as_deref());
    let owns = Owns::of(store);
    let expected = Expected::default();
    let none = Effects::default();
    let key = run_key(1, 1, "r");
    store
        .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &none)
        .await
        .expect("create");
    store
        .append(1, head(&key, 2), trigger_entry(&key, 2, "t"), &none)
        .await
        .expect("append");
    store
        .append(2, head(&key, 3), submission_entry(&key, 3, "s"), &none)
        .await
        .expect("append");
    store.put(&scenario("s", 1, "1"), &none).await.expect("put");
    store
        .register(&shape(1, 1, "d", "v1"), &none)
        .await
        .expect("register");
    assert_ledger(
        ledger,
        &expected,
        owns.runs,
        "fixture: empty effects commit nothing",
        "setup",
    )
    .await;
    let clause = "clause 2: a refused write commits none of its effects";

    let refused = store
        .create(
            &head(&key, 1),
            &trigger_entry(&key, 1, "other"),
            &effects(1, "create"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists { .. })),
        "a second create is refused: {refused:?}"
    );
    assert_ledger(ledger, &expected, owns.runs, clause, "a refused create").await;

    let refused = store
        .append(
            2,
            head(&key, 3),
            trigger_entry(&key, 3, "stale"),
            &effects(1, "stale"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::RevisionConflict { .. })),
        "a stale append is refused: {refused:?}"
    );
    assert_ledger(ledger, &expected, owns.runs, clause, "a stale append").await;

    let refused = store
        .append(
            3,
            head(&key, 4),
            trigger_entry(&key, 4, "t"),
            &effects(1, "dup-trigger"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::DuplicateKey { .. })),
        "a recorded trigger id is refused: {refused:?}"
    );
    assert_ledger(ledger, &expected, owns.runs, clause, "a duplicate trigger").await;

    let refused = store
        .append(
            3,
            head(&key, 4),
            submission_entry(&key, 4, "s"),
            &effects(1, "dup-sub"),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::DuplicateKey { .. })),
        "a recorded submission id is refused: {refused:?}"
    );
    assert_ledger(
        ledger,
        &expected,
        owns.runs,
        clause,
        "a duplicate submission",
    )
    .await;

    let refused = store
        .put(&scenario("s", 1, "2"), &effects(1, "redefine"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists { .. })),
        "another spec under a defined id is refused: {refused:?}"
    );
    assert_ledger(ledger, &expected, owns.scenarios, clause, "a refused put").await;

    let refused = store
        .register(&shape(1, 1, "d", "v1"), &effects(1, "reregister"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::AlreadyExists { .. })),
        "a registered schema is refused: {refused:?}"
    );
    assert_ledger(
        ledger,
        &expected,
        owns.schemas,
        clause,
        "a refused registration",
    )
    .await;
}

/// Clause 3: a usage key already committed counts once when a later successful write carries
/// it again, and that write still succeeds and commits the rest of its effects.
pub async fn a_committed_usage_key_counts_once<S>(fixture: EffectsFixture<S>)
where
    S: RunStore + ScenarioStore + SchemaRegistry + 'static,
{
    let (store, ledger) = (fixture.store.as_ref(), fixture.ledger.as_deref());
    let owns = Owns::of(store);
    let mut expected = Expected::default();
    let key = run_key(1, 1, "r");
    let clause = "clause 3: a usage key already committed counts once";
    let first = effects(1, "first");
    store
        .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &first)
        .await
        .expect("create");
    expected.commit(owns.runs, &first);

    // Each later write repeats one of the first write's keys (with another quantity, which
    // must not count either) beside a key of its own.
    let again = |label: &str, repeated: usize| {
        let mut e = effects(1, label);
        let mut repeat = first.usage[repeated].clone();
        repeat.quantity += 10;
        e.usage[repeated] = repeat;
        e
    };
    let e = again("append", 0);
    store
        .append(1, head(&key, 2), trigger_entry(&key, 2, "t"), &e)
        .await
        .expect("clause 3: a write repeating a committed usage key succeeds (append)");
    expected.commit(owns.runs, &e);
    assert_ledger(ledger, &expected, owns.runs, clause, "an append").await;

    let e = again("put", 1);
    store
        .put(&scenario("s", 1, "1"), &e)
        .await
        .expect("clause 3: a write repeating a committed usage key succeeds (put)");
    expected.commit(owns.scenarios, &e);
    assert_ledger(ledger, &expected, owns.scenarios, clause, "a put").await;

    let e = again("register", 0);
    store
        .register(&shape(1, 1, "d", "v1"), &e)
        .await
        .expect("clause 3: a write repeating a committed usage key succeeds (register)");
    expected.commit(owns.schemas, &e);
    assert_ledger(ledger, &expected, owns.schemas, clause, "a registration").await;
}

/// Clause 3 under contention: concurrent writes carrying one usage key all succeed and count
/// it once; each commits its own key and audit event.
pub async fn concurrent_writes_count_a_shared_key_once<S>(fixture: EffectsFixture<S>)
where
    S: RunStore + ScenarioStore + SchemaRegistry + 'static,
{
    const WRITES: usize = 8;
    let owns = Owns::of(fixture.store.as_ref());
    let shared = effects(1, "shared").usage[0].clone();
    let all: Vec<(RunKey, Effects)> = (0..WRITES)
        .map(|i| {
            let mut e = effects(1, &format!("run-{i}"));
            e.usage[0] = shared.clone();
            (run_key(1, 1, &format!("r{i}")), e)
        })
        .collect();
    let tasks: Vec<_> = all
        .iter()
        .cloned()
        .map(|(key, e)| {
            let store = fixture.store.clone();
            tokio::spawn(async move {
                store
                    .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &e)
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("create task")
            .expect("clause 3: concurrent writes sharing a usage key all succeed");
    }
    let Some(ledger) = fixture.ledger else {
        return;
    };
    let mut expected = Expected::default();
    for (_, e) in &all {
        expected.commit(owns.runs, e);
    }
    let committed = ledger.committed(tenant(1)).await;
    let mut usage = committed.usage;
    usage.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    let clause = if owns.runs {
        "clause 3: concurrent writes count a shared usage key once"
    } else {
        "clause 4: a seam that does not own its effects commits none of them"
    };
    assert_eq!(
        usage,
        expected.usage.into_values().collect::<Vec<_>>(),
        "{clause} (usage)"
    );
    // Concurrent commits may land in any order; each write's event lands once.
    let sorted = |mut events: Vec<AuditEvent>| {
        events.sort_by(|a, b| a.resource.cmp(&b.resource));
        events
    };
    assert_eq!(
        sorted(committed.audit),
        sorted(expected.audit),
        "{clause} (audit)"
    );
}

/// Clause 4: a store with no ledger of its own reports `owns_effects() == false` on every seam
/// (the service would otherwise drop the usage and audit events), and a seam that does not own
/// its effects answers every write as it would with none. (That such a seam commits none of
/// them is checked beside clauses 1 to 3, against the ledger when there is one; for a store
/// whose every seam owns its effects this check has nothing to compare.)
pub async fn unowned_effects_change_no_outcome<S>(fixture: EffectsFixture<S>)
where
    S: RunStore + ScenarioStore + SchemaRegistry + 'static,
{
    let store = fixture.store.as_ref();
    let owns = Owns::of(store);
    if fixture.ledger.is_none() {
        assert!(
            !(owns.runs || owns.scenarios || owns.schemas),
            "clause 4: a store with no ledger of its own claims its effects ({owns:?}): the \
             service would leave those calls unmetered and unaudited"
        );
    }
    // The same writes in two namespaces, without and with effects.
    let mut outcomes = Vec::new();
    for (ns, with_effects) in [(1, false), (2, true)] {
        let e = |label: &str| {
            if with_effects {
                effects(ns, label)
            } else {
                Effects::default()
            }
        };
        let key = run_key(1, ns, "r");
        let runs = vec![
            store
                .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &e("a"))
                .await,
            store
                .create(&head(&key, 1), &trigger_entry(&key, 1, "init"), &e("b"))
                .await,
            store
                .append(1, head(&key, 2), trigger_entry(&key, 2, "t"), &e("c"))
                .await,
            store
                .append(1, head(&key, 2), trigger_entry(&key, 2, "u"), &e("d"))
                .await,
            store
                .append(2, head(&key, 3), trigger_entry(&key, 3, "t"), &e("c"))
                .await,
        ];
        let scenarios = vec![
            store.put(&scenario("s", ns, "1"), &e("e")).await,
            store.put(&scenario("s", ns, "1"), &e("e")).await,
            store.put(&scenario("s", ns, "2"), &e("f")).await,
        ];
        let schemas = vec![
            store.register(&shape(1, ns, "d", "v1"), &e("g")).await,
            store.register(&shape(1, ns, "d", "v1"), &e("g")).await,
        ];
        outcomes.push((runs, scenarios, schemas));
    }
    let (without, with) = (&outcomes[0], &outcomes[1]);
    let message = "clause 4: a write's outcome does not depend on effects the seam does not own";
    if !owns.runs {
        assert_eq!(with.0, without.0, "{message} (runs)");
    }
    if !owns.scenarios {
        assert_eq!(with.1, without.1, "{message} (scenarios)");
    }
    if !owns.schemas {
        assert_eq!(with.2, without.2, "{message} (schemas)");
    }
}

/// Stamps the `Effects` suite onto `$factory`, an async fn returning an
/// [`EffectsFixture`](crate::conformance::EffectsFixture) around a fresh store:
///
/// ```text
/// async fn fixture() -> EffectsFixture<MyStore> { /* a fresh store and, if it owns effects, its ledger */ }
/// decision_gate_core::effects_conformance!(fixture);
/// ```
///
/// The checks use tenant 1 with namespaces 1 and 2.
#[macro_export]
macro_rules! effects_conformance {
    ($factory:path) => {
        $crate::__fixture_tests!(
            $factory,
            effects,
            successful_writes_commit_their_effects,
            refused_writes_commit_nothing,
            a_committed_usage_key_counts_once,
            concurrent_writes_count_a_shared_key_once,
            unowned_effects_change_no_outcome
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NamespaceId, ScenarioId, SchemaId, SchemaVersion, SubmissionId, TriggerId};
    use crate::memory::MemoryStore;
    use crate::run::{JournalEntry, RunHead};
    use crate::store::{DataShapeRecord, Page, PageRequest, ScenarioRecord, ScenarioSummary};

    /// A memory store that owns its effects, keeping them beside its data under one lock the
    /// way a database keeps them in one transaction; or, when `broken`, in one of the ways the
    /// suite must catch.
    #[derive(Default)]
    struct Ledgered {
        inner: MemoryStore,
        ledger: tokio::sync::Mutex<Effects>,
        broken: Broken,
    }

    #[derive(Clone, Copy, Default, PartialEq, Eq)]
    enum Broken {
        #[default]
        No,
        /// Commits the effects before trying the write, so refusals commit them too.
        CommitsFirst,
        /// Counts a repeated usage key again.
        CountsTwice,
        /// Says it owns the effects, and commits none.
        Claims,
    }

    impl Ledgered {
        async fn write<T>(
            &self,
            effects: &Effects,
            write: impl Future<Output = Result<T, StoreError>>,
        ) -> Result<T, StoreError> {
            let mut ledger = self.ledger.lock().await;
            if self.broken == Broken::Claims {
                return write.await;
            }
            if self.broken == Broken::CommitsFirst {
                ledger.usage.extend(effects.usage.iter().cloned());
                ledger.audit.extend(effects.audit.iter().cloned());
                return write.await;
            }
            let result = write.await?;
            for u in &effects.usage {
                let seen = ledger
                    .usage
                    .iter()
                    .any(|c| c.tenant_id == u.tenant_id && c.idempotency_key == u.idempotency_key);
                if !seen || self.broken == Broken::CountsTwice {
                    ledger.usage.push(u.clone());
                }
            }
            ledger.audit.extend(effects.audit.iter().cloned());
            Ok(result)
        }
    }

    struct Probe(Arc<Ledgered>);

    #[async_trait]
    impl EffectsProbe for Probe {
        async fn committed(&self, tenant_id: TenantId) -> Effects {
            let ledger = self.0.ledger.lock().await;
            Effects {
                usage: ledger
                    .usage
                    .iter()
                    .filter(|u| u.tenant_id == tenant_id)
                    .cloned()
                    .collect(),
                audit: ledger
                    .audit
                    .iter()
                    .filter(|a| a.tenant_id == tenant_id)
                    .cloned()
                    .collect(),
            }
        }
    }

    #[async_trait]
    impl ScenarioStore for Ledgered {
        async fn put(
            &self,
            record: &ScenarioRecord,
            effects: &Effects,
        ) -> Result<PutOutcome, StoreError> {
            self.write(effects, self.inner.put(record, effects)).await
        }
        async fn get(
            &self,
            tenant_id: TenantId,
            namespace_id: NamespaceId,
            scenario_id: &ScenarioId,
        ) -> Result<Option<ScenarioRecord>, StoreError> {
            ScenarioStore::get(&self.inner, tenant_id, namespace_id, scenario_id).await
        }
        async fn list(
            &self,
            tenant_id: TenantId,
            namespace_id: NamespaceId,
            page: &PageRequest,
        ) -> Result<Page<ScenarioSummary>, StoreError> {
            ScenarioStore::list(&self.inner, tenant_id, namespace_id, page).await
        }
        fn owns_effects(&self) -> bool {
            true
        }
    }

    #[async_trait]
    impl RunStore for Ledgered {
        async fn create(
            &self,
            head: &RunHead,
            first: &JournalEntry,
            effects: &Effects,
        ) -> Result<(), StoreError> {
            self.write(effects, self.inner.create(head, first, effects))
                .await
        }
        async fn head(&self, key: &RunKey) -> Result<Option<RunHead>, StoreError> {
            self.inner.head(key).await
        }
        async fn append(
            &self,
            expected_revision: u64,
            head: RunHead,
            entry: JournalEntry,
            effects: &Effects,
        ) -> Result<(), StoreError> {
            self.write(
                effects,
                self.inner.append(expected_revision, head, entry, effects),
            )
            .await
        }
        async fn entry_for_trigger(
            &self,
            key: &RunKey,
            trigger_id: &TriggerId,
        ) -> Result<Option<JournalEntry>, StoreError> {
            self.inner.entry_for_trigger(key, trigger_id).await
        }
        async fn head_and_trigger(
            &self,
            key: &RunKey,
            trigger_id: &TriggerId,
        ) -> Result<(Option<RunHead>, Option<JournalEntry>), StoreError> {
            self.inner.head_and_trigger(key, trigger_id).await
        }
        async fn entry_for_submission(
            &self,
            key: &RunKey,
            submission_id: &SubmissionId,
        ) -> Result<Option<JournalEntry>, StoreError> {
            self.inner.entry_for_submission(key, submission_id).await
        }
        async fn entries(
            &self,
            key: &RunKey,
            after: u64,
            limit: u32,
        ) -> Result<Vec<JournalEntry>, StoreError> {
            self.inner.entries(key, after, limit).await
        }
        fn owns_effects(&self) -> bool {
            true
        }
    }

    #[async_trait]
    impl SchemaRegistry for Ledgered {
        async fn register(
            &self,
            record: &DataShapeRecord,
            effects: &Effects,
        ) -> Result<(), StoreError> {
            self.write(effects, self.inner.register(record, effects))
                .await
        }
        async fn get(
            &self,
            tenant_id: TenantId,
            namespace_id: NamespaceId,
            schema_id: &SchemaId,
            version: &SchemaVersion,
        ) -> Result<Option<DataShapeRecord>, StoreError> {
            SchemaRegistry::get(&self.inner, tenant_id, namespace_id, schema_id, version).await
        }
        async fn list(
            &self,
            tenant_id: TenantId,
            namespace_id: NamespaceId,
            page: &PageRequest,
        ) -> Result<Page<DataShapeRecord>, StoreError> {
            SchemaRegistry::list(&self.inner, tenant_id, namespace_id, page).await
        }
        fn owns_effects(&self) -> bool {
            true
        }
    }

    fn fixture(broken: Broken) -> EffectsFixture<Ledgered> {
        let store = Arc::new(Ledgered {
            broken,
            ..Ledgered::default()
        });
        EffectsFixture {
            ledger: (broken != Broken::Claims).then(|| Arc::new(Probe(store.clone())) as _),
            store,
        }
    }

    async fn fresh() -> EffectsFixture<Ledgered> {
        fixture(Broken::No)
    }

    // A store that owns its effects passes every check, so the owning side of each clause
    // runs here (the open-source stores do not own theirs).
    crate::effects_conformance!(fresh);

    #[tokio::test]
    #[should_panic(expected = "clause 2")]
    async fn clause_2_catches_a_store_that_commits_effects_of_refused_writes() {
        refused_writes_commit_nothing(fixture(Broken::CommitsFirst)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 3")]
    async fn clause_3_catches_a_store_that_counts_a_key_twice() {
        a_committed_usage_key_counts_once(fixture(Broken::CountsTwice)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "clause 3")]
    async fn clause_3_catches_concurrent_double_counting() {
        concurrent_writes_count_a_shared_key_once(fixture(Broken::CountsTwice)).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 1")]
    async fn clause_1_catches_a_store_that_drops_effects() {
        // Says it owns its effects, and commits none of them.
        let store = Arc::new(Ledgered {
            broken: Broken::Claims,
            ..Ledgered::default()
        });
        successful_writes_commit_their_effects(EffectsFixture {
            ledger: Some(Arc::new(Probe(store.clone()))),
            store,
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 4")]
    async fn clause_4_catches_a_store_that_claims_effects_without_a_ledger() {
        unowned_effects_change_no_outcome(fixture(Broken::Claims)).await;
    }
}
