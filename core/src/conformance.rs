//! Conformance suites for the seams: one check per `# Contract` clause, each panicking with a
//! message that names the clause it found broken. A macro stamps a suite onto a factory, one
//! `#[tokio::test]` per check.
//!
//! The storage seams take an async fn returning a fresh `Arc<impl Seam>`:
//! [`scenario_store_conformance!`](crate::scenario_store_conformance),
//! [`run_store_conformance!`](crate::run_store_conformance),
//! [`schema_registry_conformance!`](crate::schema_registry_conformance),
//! [`runpack_store_conformance!`](crate::runpack_store_conformance):
//!
//! ```text
//! async fn fresh() -> std::sync::Arc<MyStore> { /* a new, empty store */ }
//! decision_gate_core::run_store_conformance!(fresh);
//! ```
//!
//! The access seams and the effects a store commits with its writes cannot be read or provoked
//! through the seam alone, so their factories return a fixture: the implementation plus a probe
//! that reads back what it recorded, or the requests its policy answers.
//!
//! | macro | factory returns | probe or fixture the backend supplies |
//! |---|---|---|
//! | [`authorizer_conformance!`](crate::authorizer_conformance) | [`AuthorizerFixture`] | requests its policy allows, hides and denies; optionally an undecidable twin |
//! | [`usage_meter_conformance!`](crate::usage_meter_conformance) | [`UsageFixture`] | a [`UsageProbe`] reading totals; optionally a [`Quota`] and an undecidable twin |
//! | [`rate_limit_conformance!`](crate::rate_limit_conformance) | [`RateFixture`] | its bursts; optionally a twin with its shared state unreachable |
//! | [`audit_sink_conformance!`](crate::audit_sink_conformance) | [`AuditFixture`] | an [`AuditProbe`] reading back the records |
//! | [`effects_conformance!`](crate::effects_conformance) | [`EffectsFixture`] | an [`EffectsProbe`] reading the committed ledger, for a store that owns its effects |
//!
//! The suites use fixed tenants (1 to 3) and namespaces (1 and 2): a backend with tenancy
//! provisions them before handing out a store.

use std::sync::Arc;

use serde_json::json;

use crate::hashing::HashAlgorithm;
use crate::ids::{
    NamespaceId, SchemaId, SchemaVersion, StageId, SubmissionId, TenantId, TriggerId,
};
use crate::run::{
    DecisionOutcome, DecisionRecord, EntryBody, JournalEntry, RunCounts, RunHead, RunKey,
    RunStatus, SubmissionEntry, SubmissionRecord, ToolCallRecord, TriggerEntry, TriggerEvent,
    TriggerKind, TriggerRecord,
};
use crate::spec::{PacketPayload, ScenarioSpec};
use crate::store::{
    DataShapeRecord, Effects, PageRequest, PutOutcome, RunStore, ScenarioRecord, ScenarioStore,
    SchemaRegistry, StoreError,
};
use crate::time::Timestamp;

pub mod audit_sink;
pub mod authorizer;
pub mod effects;
pub mod rate_limit;
pub mod usage_meter;

pub use audit_sink::{AuditFixture, AuditProbe};
pub use authorizer::{AuthorizerFixture, AuthzRequest};
pub use effects::{EffectsFixture, EffectsProbe};
pub use rate_limit::RateFixture;
pub use usage_meter::{Quota, UsageFixture, UsageProbe};

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("fixture ids are valid")
}

fn tenant(n: u64) -> TenantId {
    TenantId::new(n).expect("fixture tenant")
}

fn namespace(n: u64) -> NamespaceId {
    NamespaceId::new(n).expect("fixture namespace")
}

/// A minimal valid scenario.
#[must_use]
pub fn scenario(scenario_id: &str, ns: u64, version: &str) -> ScenarioRecord {
    let spec: ScenarioSpec = serde_json::from_value(json!({
        "scenario_id": scenario_id,
        "namespace_id": ns,
        "spec_version": version,
        "stages": [{"stage_id": "only", "advance_to": {"kind": "terminal"}}],
    }))
    .expect("fixture spec");
    let spec_hash = HashAlgorithm::Sha256
        .digest_json(&spec)
        .expect("fixture hash");
    ScenarioRecord {
        tenant_id: tenant(1),
        spec,
        spec_hash,
    }
}

/// The key of a fixture run.
#[must_use]
pub fn run_key(t: u64, ns: u64, run: &str) -> RunKey {
    RunKey {
        tenant_id: tenant(t),
        namespace_id: namespace(ns),
        run_id: id(run),
    }
}

fn decision(seq: u64, trigger: &str) -> DecisionRecord {
    DecisionRecord {
        decision_id: id(&format!("decision-{seq}")),
        seq,
        trigger_id: id(trigger),
        stage_id: id("only"),
        decided_at: Timestamp::Logical(seq),
        outcome: DecisionOutcome::Start {
            stage_id: id("only"),
        },
        correlation_id: None,
    }
}

fn tool_call(n: u64) -> ToolCallRecord {
    let h = HashAlgorithm::Sha256.digest(n.to_string().as_bytes());
    ToolCallRecord {
        call_id: format!("call-{n}"),
        method: "scenario.next".into(),
        request_hash: h.clone(),
        response_hash: h,
        called_at: Timestamp::Logical(n),
        correlation_id: None,
        error: None,
    }
}

/// A trigger entry at `revision` deciding `trigger`.
#[must_use]
pub fn trigger_entry(key: &RunKey, revision: u64, trigger: &str) -> JournalEntry {
    let event = TriggerEvent {
        trigger_id: id(trigger),
        tenant_id: key.tenant_id,
        namespace_id: key.namespace_id,
        run_id: key.run_id.clone(),
        kind: TriggerKind::AgentRequestNext,
        time: Timestamp::Logical(revision),
        source_id: "agent".into(),
        payload: None,
        correlation_id: None,
    };
    JournalEntry {
        revision,
        body: EntryBody::Trigger(Box::new(TriggerEntry {
            trigger: TriggerRecord {
                seq: revision,
                event,
            },
            gate_evals: Vec::new(),
            decision: decision(revision, trigger),
            packets: Vec::new(),
            tool_call: Some(tool_call(revision)),
        })),
    }
}

/// A submission entry at `revision`.
#[must_use]
pub fn submission_entry(key: &RunKey, revision: u64, submission: &str) -> JournalEntry {
    let payload = PacketPayload::Json {
        value: json!({"n": revision}).into(),
    };
    JournalEntry {
        revision,
        body: EntryBody::Submission(Box::new(SubmissionEntry {
            submission: SubmissionRecord {
                submission_id: id(submission),
                run_id: key.run_id.clone(),
                content_hash: payload
                    .content_hash(HashAlgorithm::Sha256)
                    .expect("fixture hash"),
                payload,
                content_type: "application/json".into(),
                submitted_at: Timestamp::Logical(revision),
                correlation_id: None,
            },
            tool_call: tool_call(revision),
        })),
    }
}

/// The head of a fixture run at `revision`.
#[must_use]
pub fn head(key: &RunKey, revision: u64) -> RunHead {
    RunHead {
        key: key.clone(),
        scenario_id: id("s"),
        spec_hash: HashAlgorithm::Sha256.digest(b"spec"),
        current_stage_id: id::<StageId>("only"),
        stage_entered_at: Timestamp::Logical(0),
        status: RunStatus::Active,
        dispatch_targets: Vec::new(),
        revision,
        counts: RunCounts {
            triggers: revision,
            decisions: revision,
            ..RunCounts::default()
        },
        last_decision: decision(revision, "init"),
    }
}

fn none() -> Effects {
    Effects::default()
}

/// A run created with its start entry.
async fn started(store: &dyn RunStore, key: &RunKey) -> JournalEntry {
    let first = trigger_entry(key, 1, "init");
    store
        .create(&head(key, 1), &first, &none())
        .await
        .expect("create a fresh run");
    first
}

/// Appends a trigger entry at the next revision.
async fn append_trigger(
    store: &dyn RunStore,
    key: &RunKey,
    revision: u64,
    trigger: &str,
) -> Result<JournalEntry, StoreError> {
    let entry = trigger_entry(key, revision, trigger);
    store
        .append(revision - 1, head(key, revision), entry.clone(), &none())
        .await
        .map(|()| entry)
}

/// `ScenarioStore` contract checks.
pub mod scenario_store {
    use super::*;

    /// Clause 1: a new key is created.
    pub async fn put_creates(store: Arc<dyn ScenarioStore>) {
        let r = scenario("s", 1, "1");
        assert_eq!(
            store.put(&r, &none()).await,
            Ok(PutOutcome::Created),
            "clause 1: a new scenario is Created"
        );
    }

    /// Clause 2: the same spec again changes nothing.
    pub async fn identical_put_is_unchanged(store: Arc<dyn ScenarioStore>) {
        let r = scenario("s", 1, "1");
        store.put(&r, &none()).await.expect("first put");
        assert_eq!(
            store.put(&r, &none()).await,
            Ok(PutOutcome::Unchanged),
            "clause 2: an identical put is Unchanged"
        );
    }

    /// Clause 3: a different spec under the same key is refused and changes nothing.
    pub async fn different_put_is_refused(store: Arc<dyn ScenarioStore>) {
        let first = scenario("s", 1, "1");
        store.put(&first, &none()).await.expect("first put");
        let err = store.put(&scenario("s", 1, "2"), &none()).await;
        assert!(
            matches!(err, Err(StoreError::AlreadyExists { .. })),
            "clause 3: {err:?}"
        );
        let kept = store
            .get(tenant(1), namespace(1), &id("s"))
            .await
            .expect("get");
        assert_eq!(kept, Some(first), "clause 3: the original spec is kept");
    }

    /// Clause 4: tenants and namespaces are separate scopes.
    pub async fn scopes_are_separate(store: Arc<dyn ScenarioStore>) {
        let a = scenario("s", 1, "1");
        let mut b = scenario("s", 1, "2");
        b.tenant_id = tenant(2);
        let c = scenario("s", 2, "3");
        for r in [&a, &b, &c] {
            assert_eq!(
                store.put(r, &none()).await,
                Ok(PutOutcome::Created),
                "clause 4: same id in another scope"
            );
        }
        assert_eq!(
            store
                .get(tenant(2), namespace(1), &id("s"))
                .await
                .expect("get"),
            Some(b)
        );
        assert_eq!(
            store
                .get(tenant(1), namespace(2), &id("s"))
                .await
                .expect("get"),
            Some(c)
        );
        assert_eq!(
            store
                .get(tenant(3), namespace(1), &id("s"))
                .await
                .expect("get"),
            None,
            "clause 4: no leak"
        );
    }

    /// Clause 5: get returns what was put, or None.
    pub async fn get_round_trips(store: Arc<dyn ScenarioStore>) {
        let r = scenario("s", 1, "1");
        store.put(&r, &none()).await.expect("put");
        assert_eq!(
            store
                .get(tenant(1), namespace(1), &id("s"))
                .await
                .expect("get"),
            Some(r),
            "clause 5"
        );
        assert_eq!(
            store
                .get(tenant(1), namespace(1), &id("other"))
                .await
                .expect("get"),
            None,
            "clause 5"
        );
    }

    /// Clause 6: list pages in id order with a null token on the last page.
    pub async fn list_pages_in_order(store: Arc<dyn ScenarioStore>) {
        for name in ["c", "a", "b", "a10", "a2"] {
            store
                .put(&scenario(name, 1, "1"), &none())
                .await
                .expect("put");
        }
        let mut seen = Vec::new();
        let mut page = PageRequest::first(2);
        loop {
            let p = store
                .list(tenant(1), namespace(1), &page)
                .await
                .expect("list");
            assert!(p.items.len() <= 2, "clause 6: at most limit items");
            seen.extend(p.items.iter().map(|s| s.scenario_id.to_string()));
            match p.next_token {
                Some(t) => page.cursor = Some(t),
                None => break,
            }
        }
        assert_eq!(
            seen,
            ["a", "a10", "a2", "b", "c"],
            "clause 6: byte order, every item once"
        );
        let zero = store
            .list(tenant(1), namespace(1), &PageRequest::first(0))
            .await;
        assert!(
            matches!(zero, Err(StoreError::Invalid { field: "limit", .. })),
            "clause 6: limit 0 is invalid: {zero:?}"
        );
        let bad = PageRequest {
            cursor: Some(String::new()),
            limit: 1,
        };
        assert!(matches!(
            store.list(tenant(1), namespace(1), &bad).await,
            Err(StoreError::Invalid {
                field: "cursor",
                ..
            })
        ));
    }
}

/// `RunStore` contract checks.
pub mod run_store {
    use super::*;

    /// Clause 1: create stores head and first entry; a taken key is refused.
    pub async fn create_stores_head_and_first_entry(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        let first = started(store.as_ref(), &key).await;
        assert_eq!(
            store.head(&key).await.expect("head"),
            Some(head(&key, 1)),
            "clause 1: head stored"
        );
        assert_eq!(
            store.entries(&key, 0, 10).await.expect("entries"),
            vec![first],
            "clause 1: first entry stored"
        );
        let again = store
            .create(&head(&key, 1), &trigger_entry(&key, 1, "other"), &none())
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { what: "run", .. })),
            "clause 1: {again:?}"
        );
        assert_eq!(
            store.entries(&key, 0, 10).await.expect("entries").len(),
            1,
            "clause 1: nothing changed"
        );
    }

    /// Clause 2: append needs the expected revision; a stale writer changes nothing.
    pub async fn append_checks_the_revision(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        started(store.as_ref(), &key).await;
        append_trigger(store.as_ref(), &key, 2, "t2")
            .await
            .expect("append at revision 1");
        let stale = store
            .append(1, head(&key, 2), trigger_entry(&key, 2, "t3"), &none())
            .await;
        assert_eq!(
            stale,
            Err(StoreError::RevisionConflict {
                expected: 1,
                actual: 2
            }),
            "clause 2"
        );
        assert_eq!(
            store.head(&key).await.expect("head").map(|h| h.revision),
            Some(2),
            "clause 2: head unchanged"
        );
        assert_eq!(
            store.entries(&key, 0, 10).await.expect("entries").len(),
            2,
            "clause 2: no entry added"
        );
    }

    /// Clause 3: a recorded trigger or submission id is refused and changes nothing.
    pub async fn duplicate_ids_are_refused(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        started(store.as_ref(), &key).await;
        append_trigger(store.as_ref(), &key, 2, "t")
            .await
            .expect("first t");
        let dup = append_trigger(store.as_ref(), &key, 3, "t").await;
        assert!(
            matches!(
                dup,
                Err(StoreError::DuplicateKey {
                    what: "trigger",
                    ..
                })
            ),
            "clause 3: {dup:?}"
        );
        store
            .append(2, head(&key, 3), submission_entry(&key, 3, "s"), &none())
            .await
            .expect("first s");
        let dup = store
            .append(3, head(&key, 4), submission_entry(&key, 4, "s"), &none())
            .await;
        assert!(
            matches!(
                dup,
                Err(StoreError::DuplicateKey {
                    what: "submission",
                    ..
                })
            ),
            "clause 3: {dup:?}"
        );
        assert_eq!(
            store.head(&key).await.expect("head").map(|h| h.revision),
            Some(3),
            "clause 3: head unchanged"
        );
        assert_eq!(
            store.entries(&key, 0, 10).await.expect("entries").len(),
            3,
            "clause 3: nothing added"
        );
    }

    /// Clause 4: the head is always the head of the last committed entry.
    pub async fn head_follows_the_last_entry(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        assert_eq!(
            store.head(&key).await.expect("head"),
            None,
            "clause 4: no head before create"
        );
        started(store.as_ref(), &key).await;
        for rev in 2..=5 {
            append_trigger(store.as_ref(), &key, rev, &format!("t{rev}"))
                .await
                .expect("append");
            let head = store.head(&key).await.expect("head").expect("exists");
            let entries = store.entries(&key, 0, 100).await.expect("entries");
            assert_eq!(head.revision, rev, "clause 4");
            assert_eq!(entries.last().map(|e| e.revision), Some(rev), "clause 4");
        }
    }

    /// Clause 5: entries are found by trigger and submission id.
    pub async fn entries_are_found_by_id(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        started(store.as_ref(), &key).await;
        let t = append_trigger(store.as_ref(), &key, 2, "t")
            .await
            .expect("append");
        let s = submission_entry(&key, 3, "s");
        store
            .append(2, head(&key, 3), s.clone(), &none())
            .await
            .expect("append");
        assert_eq!(
            store
                .entry_for_trigger(&key, &id::<TriggerId>("t"))
                .await
                .expect("find"),
            Some(t.clone()),
            "clause 5"
        );
        let current = store.head(&key).await.expect("head");
        assert_eq!(current.as_ref().map(|h| h.revision), Some(3), "clause 5");
        assert_eq!(
            store
                .head_and_trigger(&key, &id::<TriggerId>("t"))
                .await
                .expect("read"),
            (current.clone(), Some(t)),
            "clause 5"
        );
        assert_eq!(
            store
                .head_and_trigger(&key, &id::<TriggerId>("nope"))
                .await
                .expect("read"),
            (current, None),
            "clause 5"
        );
        assert_eq!(
            store
                .head_and_trigger(&run_key(1, 1, "missing"), &id::<TriggerId>("t"))
                .await
                .expect("read"),
            (None, None),
            "clause 5"
        );
        assert_eq!(
            store
                .entry_for_submission(&key, &id::<SubmissionId>("s"))
                .await
                .expect("find"),
            Some(s),
            "clause 5"
        );
        assert_eq!(
            store
                .entry_for_trigger(&key, &id::<TriggerId>("nope"))
                .await
                .expect("find"),
            None,
            "clause 5"
        );
        assert_eq!(
            store
                .entry_for_submission(&key, &id::<SubmissionId>("nope"))
                .await
                .expect("find"),
            None,
            "clause 5"
        );
    }

    /// Clause 6: entries page ascending after a revision.
    pub async fn entries_page_ascending(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        started(store.as_ref(), &key).await;
        for rev in 2..=7 {
            append_trigger(store.as_ref(), &key, rev, &format!("t{rev}"))
                .await
                .expect("append");
        }
        let revisions = |es: Vec<JournalEntry>| es.iter().map(|e| e.revision).collect::<Vec<_>>();
        assert_eq!(
            revisions(store.entries(&key, 0, 3).await.expect("page")),
            [1, 2, 3],
            "clause 6"
        );
        assert_eq!(
            revisions(store.entries(&key, 3, 3).await.expect("page")),
            [4, 5, 6],
            "clause 6"
        );
        assert_eq!(
            revisions(store.entries(&key, 6, 3).await.expect("page")),
            [7],
            "clause 6"
        );
        assert!(
            store.entries(&key, 7, 3).await.expect("page").is_empty(),
            "clause 6"
        );
    }

    /// Clause 7: appends never rewrite earlier entries.
    pub async fn appends_do_not_rewrite_history(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        let mut expected = vec![started(store.as_ref(), &key).await];
        for rev in 2..=50 {
            expected.push(
                append_trigger(store.as_ref(), &key, rev, &format!("t{rev}"))
                    .await
                    .expect("append"),
            );
            let stored = store.entries(&key, 0, 1000).await.expect("entries");
            assert_eq!(
                stored, expected,
                "clause 7: history is exactly what was appended"
            );
        }
    }

    /// Clause 8: runs are isolated per tenant, namespace and id.
    pub async fn runs_are_isolated(store: Arc<dyn RunStore>) {
        let a = run_key(1, 1, "r");
        let b = run_key(2, 1, "r");
        let c = run_key(1, 2, "r");
        for key in [&a, &b, &c] {
            started(store.as_ref(), key).await;
        }
        append_trigger(store.as_ref(), &a, 2, "t")
            .await
            .expect("append to a");
        assert_eq!(
            store.head(&b).await.expect("head").map(|h| h.revision),
            Some(1),
            "clause 8"
        );
        assert_eq!(
            store.head(&c).await.expect("head").map(|h| h.revision),
            Some(1),
            "clause 8"
        );
        assert_eq!(
            store
                .entry_for_trigger(&b, &id::<TriggerId>("t"))
                .await
                .expect("find"),
            None,
            "clause 8"
        );
        append_trigger(store.as_ref(), &b, 2, "t")
            .await
            .expect("the same trigger id in another tenant");
    }

    /// Clause 2 under contention: of concurrent appends at one revision exactly one wins.
    pub async fn concurrent_appends_have_one_winner(store: Arc<dyn RunStore>) {
        let key = run_key(1, 1, "r");
        started(store.as_ref(), &key).await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    append_trigger(store.as_ref(), &key, 2, &format!("t{i}")).await
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => wins += 1,
                Err(StoreError::RevisionConflict { .. }) => {}
                Err(e) => panic!("clause 2: unexpected error under contention: {e}"),
            }
        }
        assert_eq!(wins, 1, "clause 2: exactly one concurrent append wins");
        assert_eq!(store.entries(&key, 0, 10).await.expect("entries").len(), 2);
    }
}

/// `SchemaRegistry` contract checks.
pub mod schema_registry {
    use super::*;

    /// A data shape fixture.
    #[must_use]
    pub fn shape(t: u64, ns: u64, schema: &str, version: &str) -> DataShapeRecord {
        DataShapeRecord {
            tenant_id: tenant(t),
            namespace_id: namespace(ns),
            schema_id: id::<SchemaId>(schema),
            version: id::<SchemaVersion>(version),
            schema: json!({"type": "object"}),
            description: Some("fixture".into()),
            created_at: Timestamp::UnixMillis(1),
            signing: None,
        }
    }

    /// Clause 1: records are immutable.
    pub async fn records_are_immutable(store: Arc<dyn SchemaRegistry>) {
        let r = shape(1, 1, "s", "v1");
        store.register(&r, &none()).await.expect("register");
        let mut changed = r.clone();
        changed.description = None;
        for attempt in [&r, &changed] {
            let err = store.register(attempt, &none()).await;
            assert!(
                matches!(err, Err(StoreError::AlreadyExists { .. })),
                "clause 1: {err:?}"
            );
        }
        assert_eq!(
            store
                .get(tenant(1), namespace(1), &id("s"), &id("v1"))
                .await
                .expect("get"),
            Some(r),
            "clause 1"
        );
    }

    /// Clause 1 under contention: of racing registrations exactly one wins.
    pub async fn racing_registrations_have_one_winner(store: Arc<dyn SchemaRegistry>) {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { store.register(&shape(1, 1, "s", "v1"), &none()).await })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            if t.await.expect("task").is_ok() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1, "clause 1: one registration wins");
    }

    /// Clause 2: scopes are separate.
    pub async fn scopes_are_separate(store: Arc<dyn SchemaRegistry>) {
        for r in [
            shape(1, 1, "s", "v1"),
            shape(2, 1, "s", "v1"),
            shape(1, 2, "s", "v1"),
        ] {
            store
                .register(&r, &none())
                .await
                .expect("clause 2: same key in another scope");
        }
        assert_eq!(
            store
                .get(tenant(3), namespace(1), &id("s"), &id("v1"))
                .await
                .expect("get"),
            None,
            "clause 2"
        );
        let listed = store
            .list(tenant(1), namespace(1), &PageRequest::first(10))
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1, "clause 2: list sees one scope");
    }

    /// Clause 3: get returns what was registered.
    pub async fn get_round_trips(store: Arc<dyn SchemaRegistry>) {
        let mut r = shape(1, 1, "s", "v1");
        r.schema =
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]});
        store.register(&r, &none()).await.expect("register");
        assert_eq!(
            store
                .get(tenant(1), namespace(1), &id("s"), &id("v1"))
                .await
                .expect("get"),
            Some(r),
            "clause 3"
        );
        assert_eq!(
            store
                .get(tenant(1), namespace(1), &id("s"), &id("v2"))
                .await
                .expect("get"),
            None,
            "clause 3"
        );
    }

    /// Clause 4: list orders by (id, version) as strings and pages to a null token.
    pub async fn list_orders_and_pages(store: Arc<dyn SchemaRegistry>) {
        for (s, v) in [("b", "v1"), ("a", "v2"), ("a", "v10"), ("a", "v1")] {
            store
                .register(&shape(1, 1, s, v), &none())
                .await
                .expect("register");
        }
        let mut seen = Vec::new();
        let mut page = PageRequest::first(3);
        loop {
            let p = store
                .list(tenant(1), namespace(1), &page)
                .await
                .expect("list");
            seen.extend(
                p.items
                    .iter()
                    .map(|r| format!("{}@{}", r.schema_id, r.version)),
            );
            match p.next_token {
                Some(t) => page.cursor = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, ["a@v1", "a@v10", "a@v2", "b@v1"], "clause 4");
        let bad = PageRequest {
            cursor: Some("not-json".into()),
            limit: 1,
        };
        assert!(matches!(
            store.list(tenant(1), namespace(1), &bad).await,
            Err(StoreError::Invalid {
                field: "cursor",
                ..
            })
        ));
        assert!(matches!(
            store
                .list(tenant(1), namespace(1), &PageRequest::first(0))
                .await,
            Err(StoreError::Invalid { .. })
        ));
    }
}

/// `RunpackStore` contract checks.
pub mod runpack_store {
    use super::*;
    use crate::store::{RunpackKey, RunpackStore};

    fn key(t: u64, export: &str) -> RunpackKey {
        RunpackKey {
            run: run_key(t, 1, "r"),
            export_id: export.into(),
        }
    }

    /// Clause 1: a stored file reads back; escaping paths are refused.
    pub async fn files_round_trip_and_paths_are_confined(store: Arc<dyn RunpackStore>) {
        let k = key(1, "e1");
        store
            .put_file(&k, "artifacts/a.json", b"[1]")
            .await
            .expect("clause 1: put");
        for bad in ["../x", "/abs", "a/../../b", "./a", ""] {
            let err = store.put_file(&k, bad, b"x").await;
            assert!(
                matches!(err, Err(StoreError::Invalid { field: "path", .. })),
                "clause 1: {bad:?} gave {err:?}"
            );
        }
        assert_eq!(
            store.get_file(&k, "artifacts/a.json").await.expect("get"),
            Some(b"[1]".to_vec()),
            "clause 2"
        );
    }

    /// Clause 2: get returns exactly the stored bytes, the latest write, or None.
    pub async fn get_returns_the_bytes_or_none(store: Arc<dyn RunpackStore>) {
        let k = key(1, "e1");
        let bytes: Vec<u8> = (0..=255).collect();
        store.put_file(&k, "bin", &bytes).await.expect("put");
        assert_eq!(
            store.get_file(&k, "bin").await.expect("get"),
            Some(bytes),
            "clause 2"
        );
        assert_eq!(
            store.get_file(&k, "missing").await.expect("get"),
            None,
            "clause 2"
        );
    }

    /// Clause 3: list returns every path of the key, sorted.
    pub async fn list_is_sorted_and_complete(store: Arc<dyn RunpackStore>) {
        let k = key(1, "e1");
        for p in ["manifest.json", "artifacts/b.json", "artifacts/a.json"] {
            store.put_file(&k, p, b"{}").await.expect("put");
        }
        store
            .put_file(&key(1, "e2"), "other.json", b"{}")
            .await
            .expect("put");
        let listed = store.list_files(&k).await.expect("list");
        assert_eq!(
            listed,
            ["artifacts/a.json", "artifacts/b.json", "manifest.json"],
            "clause 3"
        );
        assert!(
            store
                .list_files(&key(1, "none"))
                .await
                .expect("list")
                .is_empty(),
            "clause 3"
        );
    }

    /// Clause 4: keys of different tenants never share storage.
    pub async fn tenants_are_separate(store: Arc<dyn RunpackStore>) {
        store
            .put_file(&key(1, "e"), "f.json", b"one")
            .await
            .expect("put");
        store
            .put_file(&key(2, "e"), "f.json", b"two")
            .await
            .expect("put");
        assert_eq!(
            store.get_file(&key(1, "e"), "f.json").await.expect("get"),
            Some(b"one".to_vec()),
            "clause 4"
        );
        assert_eq!(
            store.get_file(&key(2, "e"), "f.json").await.expect("get"),
            Some(b"two".to_vec()),
            "clause 4"
        );
        assert_eq!(
            store.get_file(&key(3, "e"), "f.json").await.expect("get"),
            None,
            "clause 4"
        );
    }
}

/// Stamps the `RunpackStore` suite onto `$factory`, an async fn returning a fresh
/// `Arc<impl RunpackStore>`.
#[macro_export]
macro_rules! runpack_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            RunpackStore,
            runpack_store,
            files_round_trip_and_paths_are_confined,
            get_returns_the_bytes_or_none,
            list_is_sorted_and_complete,
            tenants_are_separate
        );
    };
}

/// Stamps the `ScenarioStore` suite onto `$factory`, an async fn returning a fresh
/// `Arc<impl ScenarioStore>`.
#[macro_export]
macro_rules! scenario_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            ScenarioStore,
            scenario_store,
            put_creates,
            identical_put_is_unchanged,
            different_put_is_refused,
            scopes_are_separate,
            get_round_trips,
            list_pages_in_order
        );
    };
}

/// Stamps the `RunStore` suite onto `$factory`, an async fn returning a fresh
/// `Arc<impl RunStore>`.
#[macro_export]
macro_rules! run_store_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            RunStore,
            run_store,
            create_stores_head_and_first_entry,
            append_checks_the_revision,
            duplicate_ids_are_refused,
            head_follows_the_last_entry,
            entries_are_found_by_id,
            entries_page_ascending,
            appends_do_not_rewrite_history,
            runs_are_isolated,
            concurrent_appends_have_one_winner
        );
    };
}

/// Stamps the `SchemaRegistry` suite onto `$factory`, an async fn returning a fresh
/// `Arc<impl SchemaRegistry>`.
#[macro_export]
macro_rules! schema_registry_conformance {
    ($factory:path) => {
        $crate::__conformance_tests!(
            $factory,
            SchemaRegistry,
            schema_registry,
            records_are_immutable,
            racing_registrations_have_one_winner,
            scopes_are_separate,
            get_round_trips,
            list_orders_and_pages
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:path, $seam:ident, $suite:ident, $($case:ident),+ $(,)?) => {
        mod $suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let store: ::std::sync::Arc<dyn $crate::store::$seam> = $factory().await;
                    $crate::conformance::$suite::$case(store).await;
                }
            )+
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __fixture_tests {
    ($factory:path, $suite:ident, $($case:ident),+ $(,)?) => {
        mod $suite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    $crate::conformance::$suite::$case($factory().await).await;
                }
            )+
        }
    };
}
