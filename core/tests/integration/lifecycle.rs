//! The run lifecycle through the service: advance, hold, replay, submissions, timeouts,
//! branches, disclosure, trust, evidence errors, precheck, tenancy and audit.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use decision_gate_core::access::{
    Action, AuditOutcome, InMemoryUsageMeter, Principal, UsageMetric,
};
use decision_gate_core::disclosure::StaticPolicy;
use decision_gate_core::engine::AnchorRequirement;
use decision_gate_core::evidence::{
    EvidenceContext, EvidenceQuery, EvidenceValue, TrustRequirement,
};
use decision_gate_core::provider::{CheckContract, ProviderContract, ProviderError};
use decision_gate_core::run::{EntryBody, TriggerKind};
use decision_gate_core::service::{DataShapeId, PrecheckRequest, SubmitRequest};
use decision_gate_core::spec::PacketPayload;
use decision_gate_core::store::DataShapeRecord;
use decision_gate_core::store::PageRequest;
use decision_gate_core::{
    Comparator, DecisionGate, DecisionOutcome, EngineConfig, Error, EvidenceProvider,
    EvidenceResult, RunStatus, Timestamp, TriState, TrustLane,
};
use serde_json::{Value, json};

use crate::support::*;

/// Three linear stages: `a` gates the first, `b` the second; the third has no gates.
fn three_stages() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [{"gate_id": "ga", "requirement": {"Condition": "ca"}}],
             "entry_packets": [{"packet_id": "p1", "schema_id": "x", "content_type": "application/json",
                                "payload": {"kind": "json", "value": {"hello": 1}}}],
             "advance_to": {"kind": "linear"}},
            {"stage_id": "two", "gates": [{"gate_id": "gb", "requirement": {"Condition": "cb"}}],
             "entry_packets": [{"packet_id": "p2", "schema_id": "x", "content_type": "application/octet-stream",
                                "payload": {"kind": "bytes", "bytes": [1, 2, 3]}}],
             "advance_to": {"kind": "linear"}},
            {"stage_id": "three", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("ca", "a"), cond("cb", "b")]
    })
}

#[tokio::test]
async fn multi_stage_advance_hold_and_complete() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &three_stages()).await;
    let started = start(&gate, "s", "r").await;
    assert_eq!(
        started.decision.outcome,
        DecisionOutcome::Start {
            stage_id: id("one")
        }
    );
    assert_eq!(
        started.packets.len(),
        1,
        "the first stage's packets are issued at start"
    );
    assert_eq!(
        started.packets[0].receipts.len(),
        1,
        "one receipt per dispatch target"
    );

    let held = next(&gate, "s", "r", "t1", 1).await.unwrap();
    let DecisionOutcome::Hold { summary } = &held.decision.outcome else {
        panic!("expected hold: {held:?}")
    };
    assert_eq!(summary.unmet_gates, vec![id("ga")]);
    assert_eq!(summary.retry_hint, "await_evidence");
    assert_eq!(held.status, RunStatus::Active);

    set(&facts, "a", json!(true));
    let advanced = next(&gate, "s", "r", "t2", 2).await.unwrap();
    assert_eq!(
        advanced.decision.outcome,
        DecisionOutcome::Advance {
            from_stage: id("one"),
            to_stage: id("two"),
            timeout: false
        }
    );
    assert_eq!(
        advanced
            .packets
            .iter()
            .map(|p| p.envelope.packet_id.to_string())
            .collect::<Vec<_>>(),
        ["p2"]
    );
    assert_eq!(
        advanced.packets[0].envelope.content_hash,
        HashAlgorithm::Sha256.digest(&[1, 2, 3])
    );

    set(&facts, "b", json!(true));
    let into_terminal = next(&gate, "s", "r", "t3", 3).await.unwrap();
    assert!(matches!(
        into_terminal.decision.outcome,
        DecisionOutcome::Advance { .. }
    ));
    assert_eq!(
        into_terminal.status,
        RunStatus::Active,
        "entering a terminal stage does not complete the run"
    );
    let completed = next(&gate, "s", "r", "t4", 4).await.unwrap();
    assert_eq!(
        completed.decision.outcome,
        DecisionOutcome::Complete {
            stage_id: id("three")
        }
    );
    assert_eq!(completed.status, RunStatus::Completed);

    let before = journal(&gate, "s", "r").await;
    let after_end = next(&gate, "s", "r", "t5", 5).await.unwrap();
    assert_eq!(
        after_end.decision, completed.decision,
        "a finished run answers with its final decision"
    );
    assert_eq!(
        journal(&gate, "s", "r").await,
        before,
        "and records nothing"
    );

    let status = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap();
    assert_eq!(status.issued_packet_ids, vec![id("p1"), id("p2")]);
    assert_eq!(status.revision, 5);
    assert_eq!(
        journal(&gate, "s", "r").await,
        before,
        "status is read-only"
    );
}

use decision_gate_core::HashAlgorithm;

#[tokio::test]
async fn hold_summary_never_contains_evidence_values() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    set(&facts, "a", json!("top-secret-value"));
    let held = next(&gate, "s", "r", "t1", 1).await.unwrap();
    let text = serde_json::to_string(&held).unwrap();
    assert!(matches!(
        held.decision.outcome,
        DecisionOutcome::Hold { .. }
    ));
    assert!(!text.contains("top-secret-value"), "{text}");
    let status =
        serde_json::to_string(&gate.status(&ctx(), &id("s"), &id("r")).await.unwrap()).unwrap();
    assert!(!status.contains("top-secret-value"), "{status}");
}

#[tokio::test]
async fn a_trigger_id_is_decided_once() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    set(&facts, "a", json!(true));
    let first = next(&gate, "s", "r", "t1", 1).await.unwrap();
    let entries = journal(&gate, "s", "r").await;
    set(&facts, "a", json!(false));
    // Same id, different time and evidence: the recorded decision comes back, nothing is added.
    let again = next(&gate, "s", "r", "t1", 99).await.unwrap();
    assert_eq!(again.decision, first.decision);
    assert_eq!(again.packets, first.packets);
    assert_eq!(journal(&gate, "s", "r").await, entries);
    // The same id through `trigger` with another kind is still the same trigger.
    let event = event("t1", TriggerKind::ExternalEvent, Timestamp::Logical(7));
    assert_eq!(
        gate.trigger(&ctx(), &id("s"), event)
            .await
            .unwrap()
            .decision,
        first.decision
    );
    assert_eq!(journal(&gate, "s", "r").await, entries);
}

fn submit_request(submission: &str, value: Value) -> SubmitRequest {
    SubmitRequest {
        scenario_id: id("s"),
        run_id: id("r"),
        submission_id: id(submission),
        payload: PacketPayload::Json {
            value: value.into(),
        },
        content_type: "application/json".into(),
        submitted_at: Timestamp::Logical(3),
    }
}

#[tokio::test]
async fn submissions_are_idempotent_and_conflicts_change_nothing() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    let first = gate
        .submit(&ctx(), submit_request("sub", json!({"v": 1})))
        .await
        .unwrap();
    assert_eq!(
        first.content_hash,
        HashAlgorithm::Sha256.digest_json(&json!({"v": 1})).unwrap()
    );
    let entries = journal(&gate, "s", "r").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(
        gate.submit(&ctx(), submit_request("sub", json!({"v": 1})))
            .await
            .unwrap(),
        first
    );
    let conflict = gate
        .submit(&ctx(), submit_request("sub", json!({"v": 2})))
        .await;
    assert!(
        matches!(conflict, Err(Error::Conflict(ref m)) if m.contains("sub")),
        "{conflict:?}"
    );
    assert_eq!(
        journal(&gate, "s", "r").await,
        entries,
        "neither the replay nor the conflict is recorded"
    );
}

/// A call the journal records as a tool call carries the same request digest in the audit
/// trail, so an audit line and a runpack entry can be matched; it is the digest of what the
/// journal recorded (the trigger event, the submission request).
#[tokio::test]
async fn journal_and_audit_carry_one_request_hash_per_call() {
    let facts = facts();
    let (gate, audit) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    next(&gate, "s", "r", "t", 1).await.unwrap();
    let request = submit_request("sub", json!({"v": 1}));
    gate.submit(&ctx(), request.clone()).await.unwrap();

    let audited = |action: Action| {
        let events = audit.events();
        let mut hashes = events
            .iter()
            .filter(|e| e.action == action && e.outcome == AuditOutcome::Success)
            .map(|e| e.request_hash.clone().expect("an audited request hash"));
        let hash = hashes.next().expect("one audited call");
        assert!(hashes.next().is_none(), "one call of {action:?}");
        hash
    };
    let entries = journal(&gate, "s", "r").await;
    let EntryBody::Trigger(trigger) = &entries[1].body else {
        panic!(
            "the second entry records the trigger: {:?}",
            entries[1].body
        );
    };
    let recorded = &trigger
        .tool_call
        .as_ref()
        .expect("a tool call")
        .request_hash;
    assert_eq!(
        *recorded,
        HashAlgorithm::Sha256
            .digest_json(&trigger.trigger.event)
            .unwrap()
    );
    assert_eq!(audited(Action::ScenarioNext), *recorded);
    let EntryBody::Submission(submission) = &entries[2].body else {
        panic!(
            "the third entry records the submission: {:?}",
            entries[2].body
        );
    };
    let recorded = &submission.tool_call.request_hash;
    assert_eq!(
        *recorded,
        HashAlgorithm::Sha256.digest_json(&request).unwrap()
    );
    assert_eq!(audited(Action::ScenarioSubmit), *recorded);
}

/// One stage with a 5-tick timeout and the given policy, branching when asked.
fn timed(policy: &str, branch: bool) -> Value {
    let advance = if branch {
        json!({"kind": "branch", "branches": [{"gate_id": "g", "outcome": "unknown", "next_stage_id": "late"}], "default": "done"})
    } else {
        json!({"kind": "linear"})
    };
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "wait", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
             "advance_to": advance, "timeout": {"timeout_ms": 5}, "on_timeout": policy},
            {"stage_id": "done", "entry_packets": [{"packet_id": "pd", "schema_id": "x", "content_type": "text/plain",
                "payload": {"kind": "json", "value": "done"}}], "advance_to": {"kind": "terminal"}},
            {"stage_id": "late", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("c", "a")]
    })
}

async fn tick(
    gate: &DecisionGate,
    trigger: &str,
    time: Timestamp,
) -> Result<decision_gate_core::TriggerResult, Error> {
    let event = event(trigger, TriggerKind::Tick, time);
    gate.trigger(&ctx(), &id("s"), event).await
}

#[tokio::test]
async fn timeout_fail() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &timed("fail", false)).await;
    start(&gate, "s", "r").await;
    let early = tick(&gate, "early", Timestamp::Logical(4)).await.unwrap();
    assert!(
        matches!(early.decision.outcome, DecisionOutcome::Hold { .. }),
        "a tick before the deadline evaluates"
    );
    let late_agent = next(&gate, "s", "r", "agent", 50).await.unwrap();
    assert!(
        matches!(late_agent.decision.outcome, DecisionOutcome::Hold { .. }),
        "only ticks apply timeouts"
    );
    let timed_out = tick(&gate, "deadline", Timestamp::Logical(5))
        .await
        .unwrap();
    assert_eq!(
        timed_out.decision.outcome,
        DecisionOutcome::Fail {
            reason: "timeout".into()
        },
        "the deadline is inclusive"
    );
    assert_eq!(timed_out.status, RunStatus::Failed);
    let last = journal(&gate, "s", "r").await.pop().unwrap();
    let EntryBody::Trigger(t) = last.body else {
        panic!()
    };
    assert!(t.gate_evals.is_empty(), "a timeout skips gate evaluation");
}

#[tokio::test]
async fn timeout_advance_with_flag() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &timed("advance_with_flag", false)).await;
    start(&gate, "s", "r").await;
    let moved = tick(&gate, "t", Timestamp::Logical(10)).await.unwrap();
    assert_eq!(
        moved.decision.outcome,
        DecisionOutcome::Advance {
            from_stage: id("wait"),
            to_stage: id("done"),
            timeout: true
        }
    );
    assert_eq!(
        moved.packets.len(),
        1,
        "the next stage's packets are issued"
    );
    let status = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap();
    assert_eq!(status.current_stage_id, id("done"));
}

#[tokio::test]
async fn timeout_alternate_branch_routes_through_unknown() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &timed("alternate_branch", true)).await;
    start(&gate, "s", "r").await;
    let moved = tick(&gate, "t", Timestamp::Logical(10)).await.unwrap();
    assert_eq!(
        moved.decision.outcome,
        DecisionOutcome::Advance {
            from_stage: id("wait"),
            to_stage: id("late"),
            timeout: true
        }
    );
}

#[tokio::test]
async fn trigger_time_kind_must_match_the_run() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &timed("fail", false)).await;
    start(&gate, "s", "r").await;
    let before = journal(&gate, "s", "r").await;
    let err = tick(&gate, "t", Timestamp::UnixMillis(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, message } if field == "time" && message.contains("logical")),
        "{err}"
    );
    assert_eq!(journal(&gate, "s", "r").await, before);
}

fn branching() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "fork", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
             "advance_to": {"kind": "branch", "branches": [
                 {"gate_id": "g", "outcome": "false", "next_stage_id": "when-false"},
                 {"gate_id": "g", "outcome": "unknown", "next_stage_id": "when-unknown"}
             ], "default": "when-true"}},
            {"stage_id": "when-true", "advance_to": {"kind": "terminal"}},
            {"stage_id": "when-false", "advance_to": {"kind": "terminal"}},
            {"stage_id": "when-unknown", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("c", "a")]
    })
}

#[tokio::test]
async fn branches_route_on_true_false_and_unknown() {
    for (value, target) in [
        (Some(json!(true)), "when-true"),
        (Some(json!(false)), "when-false"),
        (None, "when-unknown"),
    ] {
        let facts = facts();
        let (gate, _) = service(&facts);
        define(&gate, &branching()).await;
        start(&gate, "s", "r").await;
        if let Some(v) = value {
            set(&facts, "a", v);
        }
        let moved = next(&gate, "s", "r", "t", 1).await.unwrap();
        assert_eq!(
            moved.decision.outcome,
            DecisionOutcome::Advance {
                from_stage: id("fork"),
                to_stage: id(target),
                timeout: false
            }
        );
    }
}

#[tokio::test]
async fn first_matching_branch_wins_and_no_match_without_default_holds() {
    let facts = facts();
    let (gate, _) = service(&facts);
    let spec = json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "fork", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
             "advance_to": {"kind": "branch", "branches": [
                 {"gate_id": "g", "outcome": "true", "next_stage_id": "first"},
                 {"gate_id": "g", "outcome": "true", "next_stage_id": "second"},
                 {"gate_id": "g", "outcome": "false", "next_stage_id": "second"}
             ]}},
            {"stage_id": "first", "advance_to": {"kind": "terminal"}},
            {"stage_id": "second", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("c", "a")]
    });
    define(&gate, &spec).await;
    start(&gate, "s", "r").await;
    let held = next(&gate, "s", "r", "t0", 1).await.unwrap();
    assert!(
        matches!(&held.decision.outcome, DecisionOutcome::Hold { summary } if summary.retry_hint == "await_evidence")
    );
    set(&facts, "a", json!(true));
    let moved = next(&gate, "s", "r", "t1", 2).await.unwrap();
    assert_eq!(
        moved.decision.outcome,
        DecisionOutcome::Advance {
            from_stage: id("fork"),
            to_stage: id("first"),
            timeout: false
        }
    );
}

#[tokio::test]
async fn a_denied_disclosure_fails_the_run_with_no_packets() {
    let facts = facts();
    let policy = Arc::new(StaticPolicy {
        rules: vec![decision_gate_core::disclosure::PolicyRule {
            effect: decision_gate_core::disclosure::PolicyDecision::Deny,
            target_kinds: vec![],
            require_labels: vec![],
            forbid_labels: vec![],
            packet_ids: vec![id("p2")],
            stage_ids: vec![],
            scenario_ids: vec![],
        }],
        default: decision_gate_core::disclosure::PolicyDecision::Permit,
    });
    let gate = builder(&facts).policy(policy).build();
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    set(&facts, "a", json!(true));
    let failed = next(&gate, "s", "r", "t1", 1).await.unwrap();
    assert_eq!(
        failed.decision.outcome,
        DecisionOutcome::Fail {
            reason: "policy denied disclosure".into()
        }
    );
    assert!(failed.packets.is_empty());
    assert_eq!(failed.status, RunStatus::Failed);
    let status = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap();
    assert_eq!(
        status.issued_packet_ids,
        vec![id("p1")],
        "nothing of the denied stage was issued"
    );
}

#[tokio::test]
async fn a_denied_first_disclosure_refuses_the_start_and_stores_nothing() {
    let facts = facts();
    let gate = builder(&facts)
        .policy(Arc::new(StaticPolicy::deny_all()))
        .build();
    define(&gate, &three_stages()).await;
    let err = gate
        .start_run(&ctx(), start_request("s", "r"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "permission_denied", "{err}");
    let missing = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap_err();
    assert_eq!(missing.kind(), "not_found");
}

fn one_gate(requirement: Value, conditions: Vec<Value>) -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "only", "gates": [{"gate_id": "g", "requirement": requirement}], "advance_to": {"kind": "terminal"}}],
        "conditions": conditions
    })
}

/// Defines the one-gate scenario over `facts.a`, starts run `r` and decides one trigger.
async fn single_gate_outcome(gate: &DecisionGate) -> DecisionOutcome {
    define(
        gate,
        &one_gate(json!({"Condition": "c"}), vec![cond("c", "a")]),
    )
    .await;
    start(gate, "s", "r").await;
    next(gate, "s", "r", "t", 1)
        .await
        .expect("decide the trigger")
        .decision
        .outcome
}

fn last_gate_records(
    entries: &[decision_gate_core::run::JournalEntry],
) -> Vec<decision_gate_core::run::GateEvalRecord> {
    let EntryBody::Trigger(t) = &entries.last().unwrap().body else {
        panic!("last entry is a trigger")
    };
    t.gate_evals.clone()
}

#[tokio::test]
async fn trust_lanes_only_tighten() {
    let facts = facts();
    facts.set(
        &id("a"),
        EvidenceResult::json(json!(true)).with_lane(TrustLane::Asserted),
    );
    // Global verified: asserted evidence is unknown, with a trust_lane error, value kept.
    let (gate, _) = service(&facts);
    single_gate_outcome(&gate).await;
    let records = last_gate_records(&journal(&gate, "s", "r").await);
    let evidence = &records[0].evidence[0];
    assert_eq!(evidence.status, TriState::Unknown);
    assert_eq!(
        evidence.result.error.as_ref().map(|e| e.code.as_str()),
        Some("trust_lane")
    );
    assert!(
        evidence.result.value.is_some(),
        "a trust failure keeps the value"
    );

    // A provider override of `asserted` cannot relax a global `verified`.
    let mut relaxed = EngineConfig::default();
    relaxed.provider_trust.insert(
        id("facts"),
        TrustRequirement {
            min_lane: TrustLane::Asserted,
        },
    );
    let gate = service_with(&facts, relaxed);
    assert!(matches!(
        single_gate_outcome(&gate).await,
        DecisionOutcome::Hold { .. }
    ));

    // Global asserted admits it; a gate requiring verified tightens it again.
    let permissive = EngineConfig {
        trust: TrustRequirement {
            min_lane: TrustLane::Asserted,
        },
        ..EngineConfig::default()
    };
    let gate = service_with(&facts, permissive.clone());
    assert!(matches!(
        single_gate_outcome(&gate).await,
        DecisionOutcome::Complete { .. }
    ));
    let gate = service_with(&facts, permissive);
    let mut strict_gate = one_gate(json!({"Condition": "c"}), vec![cond("c", "a")]);
    strict_gate["stages"][0]["gates"][0]["trust"] = json!({"min_lane": "verified"});
    define(&gate, &strict_gate).await;
    start(&gate, "s", "r").await;
    assert!(matches!(
        next(&gate, "s", "r", "t", 1)
            .await
            .unwrap()
            .decision
            .outcome,
        DecisionOutcome::Hold { .. }
    ));
}

/// A provider that records the order of its queries and fails on check `h`.
struct Recording {
    contract: ProviderContract,
    calls: Mutex<Vec<(String, EvidenceContext)>>,
}

impl Recording {
    fn new() -> Arc<Self> {
        let checks = ["a", "b", "h"]
            .map(|c| CheckContract {
                check_id: id(c),
                description: c.into(),
                params_schema: json!(true),
                result_schema: json!(true),
                allowed_comparators: Comparator::ALL.to_vec(),
            })
            .to_vec();
        Arc::new(Self {
            contract: ProviderContract {
                provider_id: id("rec"),
                description: "records calls".into(),
                checks,
            },
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl EvidenceProvider for Recording {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        self.calls
            .lock()
            .unwrap()
            .push((query.check_id.to_string(), ctx.clone()));
        if query.check_id.as_str() == "h" {
            return Err(ProviderError("provider unavailable".into()));
        }
        Ok(EvidenceResult::json(json!(true)))
    }
}

fn rec_cond(name: &str, check: &str) -> Value {
    json!({"condition_id": name, "query": {"provider_id": "rec", "check_id": check}, "comparator": "equals", "expected": true})
}

#[tokio::test]
async fn every_condition_is_queried_once_in_tree_order_and_failures_stay_local() {
    let rec = Recording::new();
    let gate = DecisionGate::builder()
        .provider(rec.clone())
        .unwrap()
        .build();
    let spec = json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "only", "gates": [
            {"gate_id": "g1", "requirement": {"And": [{"Condition": "cb"}, {"Condition": "ca"}]}},
            {"gate_id": "g2", "requirement": {"Or": [{"Condition": "ca"}, {"Condition": "ch"}]}}
        ], "advance_to": {"kind": "terminal"}}],
        "conditions": [rec_cond("ca", "a"), rec_cond("cb", "b"), rec_cond("ch", "h")]
    });
    define(&gate, &spec).await;
    start(&gate, "s", "r").await;
    let decided = next(&gate, "s", "r", "t", 3).await.unwrap();
    let calls = rec.calls.lock().unwrap().clone();
    assert_eq!(
        calls.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["b", "a", "h"],
        "tree order, each once"
    );
    let ctx = &calls[0].1;
    assert_eq!(
        (
            ctx.trigger_id.as_str(),
            ctx.stage_id.as_str(),
            ctx.trigger_time
        ),
        ("t", "only", Timestamp::Logical(3))
    );
    assert!(
        matches!(decided.decision.outcome, DecisionOutcome::Complete { .. }),
        "Or(T, U) is true"
    );
    let records = last_gate_records(&journal(&gate, "s", "r").await);
    let failed = records[1]
        .evidence
        .iter()
        .find(|e| e.condition_id.as_str() == "ch")
        .unwrap();
    assert_eq!(failed.status, TriState::Unknown);
    let error = failed.result.error.as_ref().unwrap();
    assert_eq!(error.code, "provider_error");
    assert!(error.message.contains("provider unavailable"));
    assert!(failed.result.value.is_none() && failed.result.evidence_hash.is_none());
}

#[tokio::test]
async fn oversized_evidence_is_unknown_and_the_trigger_is_still_recorded() {
    let facts = facts();
    let config = EngineConfig {
        limits: decision_gate_core::Limits {
            max_evidence_bytes: 16,
            ..Default::default()
        },
        ..EngineConfig::default()
    };
    let gate = service_with(&facts, config);
    define(
        &gate,
        &one_gate(json!({"Condition": "c"}), vec![cond("c", "a")]),
    )
    .await;
    start(&gate, "s", "r").await;
    set(&facts, "a", json!("a string well over sixteen bytes"));
    let held = next(&gate, "s", "r", "t", 1).await.unwrap();
    assert!(matches!(
        held.decision.outcome,
        DecisionOutcome::Hold { .. }
    ));
    let records = last_gate_records(&journal(&gate, "s", "r").await);
    let error = records[0].evidence[0].result.error.clone().unwrap();
    assert_eq!(error.code, "evidence_too_large");
    assert!(
        error.message.contains("limit is 16 bytes"),
        "{}",
        error.message
    );
    assert!(records[0].evidence[0].result.value.is_none());
}

#[tokio::test]
async fn evidence_hashes_are_recomputed_and_anchors_enforced() {
    let facts = facts();
    let mut forged = EvidenceResult::json(json!(true));
    forged.evidence_hash = Some(HashAlgorithm::Sha256.digest(b"forged"));
    facts.set(&id("a"), forged);
    let mut config = EngineConfig::default();
    let gate = service_with(&facts, config.clone());
    single_gate_outcome(&gate).await;
    let records = last_gate_records(&journal(&gate, "s", "r").await);
    assert_eq!(
        records[0].evidence[0].result.evidence_hash,
        Some(HashAlgorithm::Sha256.digest(b"true"))
    );

    config.anchor_policy.insert(
        id("facts"),
        AnchorRequirement {
            anchor_type: "receipt".into(),
            required_fields: vec!["id".into()],
        },
    );
    let gate = service_with(&facts, config);
    assert!(matches!(
        single_gate_outcome(&gate).await,
        DecisionOutcome::Hold { .. }
    ));
    let records = last_gate_records(&journal(&gate, "s", "r").await);
    let error = records[0].evidence[0].result.error.clone().unwrap();
    assert_eq!(
        (error.code.as_str(), error.message.as_str()),
        ("anchor_invalid", "missing evidence_anchor")
    );
}

#[tokio::test]
async fn bytes_evidence_compares_bytewise() {
    let facts = facts();
    facts.set(
        &id("a"),
        EvidenceResult {
            value: Some(EvidenceValue::Bytes(vec![1, 2, 3])),
            ..EvidenceResult::json(json!(null))
        },
    );
    let (gate, _) = service(&facts);
    let c = json!({"condition_id": "c", "query": {"provider_id": "facts", "check_id": "a"}, "comparator": "equals", "expected": [1, 2, 3]});
    define(&gate, &one_gate(json!({"Condition": "c"}), vec![c])).await;
    start(&gate, "s", "r").await;
    assert!(matches!(
        next(&gate, "s", "r", "t", 1)
            .await
            .unwrap()
            .decision
            .outcome,
        DecisionOutcome::Complete { .. }
    ));
}

#[tokio::test]
async fn precheck_is_asserted_and_touches_nothing() {
    let facts = facts();
    let spec = json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"And": [{"Condition": "ca"}, {"Condition": "cb"}]}}], "advance_to": {"kind": "linear"}},
            {"stage_id": "two", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("ca", "a"), cond("cb", "b")]
    });
    let claims: BTreeMap<_, _> = [
        (id("ca"), EvidenceResult::json(json!(true))),
        (id("cb"), EvidenceResult::json(json!(true))),
    ]
    .into();
    let request = PrecheckRequest {
        scenario_id: id("s"),
        stage_id: None,
        evidence: claims.clone(),
        data_shape: None,
        payload: None,
    };

    // Under the default (verified) trust, claimed evidence cannot pass, even when it says verified.
    let (gate, _) = service(&facts);
    define(&gate, &spec).await;
    let held = gate.precheck(&ctx(), request.clone()).await.unwrap();
    assert!(
        matches!(held.decision, DecisionOutcome::Hold { .. }),
        "{held:?}"
    );
    assert_eq!(held.gate_evaluations[0].status, TriState::Unknown);

    let permissive = EngineConfig {
        trust: TrustRequirement {
            min_lane: TrustLane::Asserted,
        },
        ..EngineConfig::default()
    };
    let gate = service_with(&facts, permissive);
    define(&gate, &spec).await;
    let passed = gate.precheck(&ctx(), request.clone()).await.unwrap();
    assert_eq!(
        passed.decision,
        DecisionOutcome::Advance {
            from_stage: id("one"),
            to_stage: id("two"),
            timeout: false
        }
    );
    assert_eq!(
        gate.precheck(&ctx(), request.clone()).await.unwrap(),
        passed,
        "repeatable"
    );
    let partial = PrecheckRequest {
        evidence: claims.into_iter().take(1).collect(),
        ..request.clone()
    };
    assert_eq!(
        gate.precheck(&ctx(), partial)
            .await
            .unwrap()
            .gate_evaluations[0]
            .status,
        TriState::Unknown
    );
    let unknown_stage = PrecheckRequest {
        stage_id: Some(id("nope")),
        ..request
    };
    let err = gate.precheck(&ctx(), unknown_stage).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "stage_id"),
        "{err}"
    );
    let runs = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap_err();
    assert_eq!(runs.kind(), "not_found", "precheck created no run");
}

#[tokio::test]
async fn tenants_are_isolated_and_denials_are_audited() {
    let facts = facts();
    let (gate, audit) = service(&facts);
    define(&gate, &three_stages()).await;
    // The same scenario id in another tenant is another scenario.
    let other = ctx_in(2, 1);
    let mut spec2 = three_stages();
    spec2["spec_version"] = json!("2");
    gate.define_scenario_json(&other, &spec2.to_string())
        .await
        .unwrap();
    let list = gate
        .list_scenarios(&other, PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_ne!(
        list.items[0].spec_hash,
        gate.list_scenarios(&ctx(), PageRequest::first(10))
            .await
            .unwrap()
            .items[0]
            .spec_hash
    );
    start(&gate, "s", "r").await;

    // A principal scoped to tenant 2 asking for tenant 1's run sees "not found".
    let mut intruder = ctx();
    intruder.principal = Principal {
        subject: "t2-agent".into(),
        tenant_id: Some(other.tenant_id),
        namespace_id: None,
        actions: None,
        ..Principal::default()
    };
    let hidden = gate
        .status(&intruder, &id("s"), &id("r"))
        .await
        .unwrap_err();
    let missing = gate
        .status(&ctx(), &id("s"), &id("no-such-run"))
        .await
        .unwrap_err();
    assert_eq!(hidden.kind(), "not_found");
    assert_eq!(
        hidden.to_string(),
        missing.to_string().replace("no-such-run", "r"),
        "indistinguishable from a missing run"
    );

    // In scope but without the permission: permission denied.
    let mut reader = ctx();
    reader.principal = Principal {
        subject: "reader".into(),
        tenant_id: None,
        namespace_id: None,
        actions: Some([Action::ScenarioStatus].into()),
        ..Principal::default()
    };
    let denied = next(&gate, "s", "r", "t", 1).await.map(drop);
    assert!(denied.is_ok(), "the local caller may trigger");
    let denied = gate
        .next(&reader, next_request("s", "r", "t2", 2))
        .await
        .unwrap_err();
    assert_eq!(denied.kind(), "permission_denied");

    let events = audit.events();
    let failure = |subject: &str, kind: &str| {
        events.iter().any(|e| {
            e.principal == subject && e.outcome == AuditOutcome::Failure { kind: kind.into() }
        })
    };
    assert!(
        failure("t2-agent", "not_found"),
        "the cross-tenant attempt is audited"
    );
    assert!(
        failure("reader", "permission_denied"),
        "the denial is audited"
    );
    assert!(
        events
            .iter()
            .any(|e| e.action == Action::ScenarioDefine && e.outcome == AuditOutcome::Success)
    );
    assert!(
        events
            .iter()
            .all(|e| e.request_hash.as_ref().is_none_or(|h| h.value.len() == 64))
    );
}

#[tokio::test]
async fn usage_is_metered_per_accepted_call() {
    let facts = facts();
    let meter = Arc::new(InMemoryUsageMeter::default());
    let gate = builder(&facts).usage_meter(meter.clone()).build();
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    next(&gate, "s", "r", "t", 1).await.unwrap();
    let tenant = ctx().tenant_id;
    assert_eq!(meter.total(tenant, UsageMetric::RunsStarted), 1);
    assert_eq!(meter.total(tenant, UsageMetric::ToolCalls), 3);
}

/// Admits the first `admits` calls, then refuses every call as over the credential's rate.
struct Admits(std::sync::atomic::AtomicU32);

#[async_trait]
impl decision_gate_core::access::RateLimit for Admits {
    async fn admit(
        &self,
        _ctx: &decision_gate_core::RequestContext,
    ) -> Result<(), decision_gate_core::access::RateError> {
        let left = self.0.load(std::sync::atomic::Ordering::SeqCst);
        if left == 0 {
            return Err(decision_gate_core::access::RateError::Limited {
                scope: decision_gate_core::access::RateScope::Credential,
                retry_after_ms: 250,
            });
        }
        self.0.store(left - 1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_rate_limited_call_does_nothing_counts_nothing_and_is_audited() {
    let facts = facts();
    set(&facts, "a", json!(true));
    let meter = Arc::new(InMemoryUsageMeter::default());
    let audit = Arc::new(decision_gate_core::access::InMemoryAuditSink::default());
    let limit = Arc::new(Admits(std::sync::atomic::AtomicU32::new(2)));
    let gate = builder(&facts)
        .usage_meter(meter.clone())
        .audit_sink(audit.clone())
        .rate_limit(limit.clone())
        .build();
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    let refused = next(&gate, "s", "r", "t", 1).await.map(drop).unwrap_err();
    assert_eq!(refused.kind(), "rate_limited");
    assert_eq!(refused.retry_after_ms(), Some(250));
    assert_eq!(
        meter.total(ctx().tenant_id, UsageMetric::ToolCalls),
        2,
        "not counted"
    );
    // Admissions for reading the journal (a page, then the empty page after it).
    limit.0.store(2, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(journal(&gate, "s", "r").await.len(), 1, "nothing appended");
    assert!(
        audit.events().iter().any(|e| e.outcome
            == AuditOutcome::Failure {
                kind: "rate_limited".into()
            }),
        "the refusal is audited"
    );
}

/// Counts what it is shown; refuses to record `refused` (a quota other replicas filled).
struct FullAfterCheck {
    inner: InMemoryUsageMeter,
    refused: UsageMetric,
}

#[async_trait]
impl decision_gate_core::access::UsageMeter for FullAfterCheck {
    async fn check(
        &self,
        events: &[decision_gate_core::access::UsageEvent],
    ) -> Result<(), decision_gate_core::access::UsageError> {
        self.inner.check(events).await
    }

    async fn record(
        &self,
        events: &[decision_gate_core::access::UsageEvent],
    ) -> Result<(), decision_gate_core::access::UsageError> {
        if events.iter().any(|e| e.metric == self.refused) {
            return Err(decision_gate_core::access::UsageError::QuotaExceeded(
                decision_gate_core::access::QuotaRefusal {
                    metric: self.refused,
                    period: decision_gate_core::access::QuotaPeriod::Total,
                    limit: 1,
                    used: 1,
                    reset_at_ms: None,
                    retry_after_ms: None,
                },
            ));
        }
        self.inner.record(events).await
    }
}

#[tokio::test]
async fn a_read_the_meter_refuses_answers_the_refusal_and_is_not_counted() {
    let facts = facts();
    let audit = Arc::new(decision_gate_core::access::InMemoryAuditSink::default());
    let meter = Arc::new(FullAfterCheck {
        inner: InMemoryUsageMeter::default(),
        refused: UsageMetric::EvidenceQueries,
    });
    let gate = builder(&facts)
        .usage_meter(meter.clone())
        .audit_sink(audit.clone())
        .build();
    define(&gate, &three_stages()).await;
    let request = decision_gate_core::service::EvidenceQueryRequest {
        query: serde_json::from_value(json!({ "provider_id": "facts", "check_id": "a" }))
            .expect("a query"),
        run_id: id("r"),
        scenario_id: id("s"),
        stage_id: id("one"),
        trigger_id: id("t"),
        trigger_time: Timestamp::Logical(1),
    };
    let refused = gate
        .query_evidence(&ctx(), request)
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(refused.kind(), "quota_exceeded", "{refused}");
    assert_eq!(
        meter.inner.total(ctx().tenant_id, UsageMetric::ToolCalls),
        1,
        "only the define was counted"
    );
    assert!(audit.events().iter().any(|e| e.outcome
        == AuditOutcome::Failure {
            kind: "quota_exceeded".into()
        }));
}

/// Counts deliveries, to show that refused calls deliver nothing.
#[derive(Default)]
struct Counting(std::sync::atomic::AtomicUsize);

#[async_trait]
impl decision_gate_core::disclosure::Dispatcher for Counting {
    async fn dispatch(
        &self,
        target: &decision_gate_core::disclosure::DispatchTarget,
        envelope: &decision_gate_core::disclosure::PacketEnvelope,
        payload: &PacketPayload,
    ) -> Result<
        decision_gate_core::disclosure::DispatchReceipt,
        decision_gate_core::disclosure::DisclosureError,
    > {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        decision_gate_core::disclosure::RecordingDispatcher
            .dispatch(target, envelope, payload)
            .await
    }
}

#[tokio::test]
async fn refused_starts_and_disclosures_deliver_nothing() {
    let facts = facts();
    let counting = Arc::new(Counting::default());
    let gate = builder(&facts).dispatcher(counting.clone()).build();
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    assert_eq!(
        counting.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the first stage's packet to one target"
    );
    let taken = gate
        .start_run(&ctx(), start_request("s", "r"))
        .await
        .unwrap_err();
    assert_eq!(taken.kind(), "already_exists");
    assert_eq!(
        counting.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a taken run id discloses nothing"
    );

    // Two targets, the second refused: nothing is delivered to the first either.
    let policy = Arc::new(StaticPolicy {
        rules: vec![decision_gate_core::disclosure::PolicyRule {
            effect: decision_gate_core::disclosure::PolicyDecision::Deny,
            target_kinds: vec!["channel".into()],
            require_labels: vec![],
            forbid_labels: vec![],
            packet_ids: vec![],
            stage_ids: vec![],
            scenario_ids: vec![],
        }],
        default: decision_gate_core::disclosure::PolicyDecision::Permit,
    });
    let counting = Arc::new(Counting::default());
    let gate = builder(&facts)
        .dispatcher(counting.clone())
        .policy(policy)
        .build();
    define(&gate, &three_stages()).await;
    let mut two_targets = start_request("s", "r");
    two_targets
        .dispatch_targets
        .push(decision_gate_core::disclosure::DispatchTarget::Channel {
            channel: "ops".into(),
        });
    assert_eq!(
        gate.start_run(&ctx(), two_targets)
            .await
            .unwrap_err()
            .kind(),
        "permission_denied"
    );
    assert_eq!(
        counting.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the permitted target got nothing"
    );
}

#[tokio::test]
async fn precheck_names_evidence_for_conditions_the_stage_lacks() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &three_stages()).await;
    let request = PrecheckRequest {
        scenario_id: id("s"),
        stage_id: None,
        evidence: [(id("cx"), EvidenceResult::json(json!(true)))].into(),
        data_shape: None,
        payload: None,
    };
    let err = gate.precheck(&ctx(), request).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "evidence.cx"),
        "{err}"
    );
}

#[tokio::test]
async fn out_of_scope_callers_learn_nothing_about_their_documents() {
    let facts = facts();
    let (gate, audit) = service(&facts);
    let mut intruder = ctx();
    intruder.principal = Principal {
        subject: "other-tenant".into(),
        tenant_id: Some(decision_gate_core::TenantId::new(2).unwrap()),
        namespace_id: None,
        actions: None,
        ..Principal::default()
    };
    let err = gate
        .define_scenario_json(&intruder, "{not json")
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        "not_found",
        "authorization comes before parsing"
    );
    assert!(
        audit.events().iter().any(|e| e.principal == "other-tenant"),
        "and the refusal is audited"
    );
    let start = gate
        .start_run(&intruder, start_request("s", "r"))
        .await
        .unwrap_err();
    let missing = gate
        .start_run(&ctx(), start_request("s", "r"))
        .await
        .unwrap_err();
    assert_eq!(
        start, missing,
        "an out-of-scope start looks exactly like a missing scenario"
    );
}

/// The reference form of precheck: one payload, checked against a registered data shape and
/// keyed by condition id (any value when the stage has one condition).
#[tokio::test]
async fn precheck_maps_a_shaped_payload_to_the_stages_conditions() {
    let facts = facts();
    let permissive = EngineConfig {
        trust: TrustRequirement {
            min_lane: TrustLane::Asserted,
        },
        ..EngineConfig::default()
    };
    let gate = service_with(&facts, permissive);
    define(&gate, &three_stages()).await;
    let register = async |version: &str, schema: Value| {
        gate.register_schema(
            &ctx(),
            DataShapeRecord {
                tenant_id: ctx().tenant_id,
                namespace_id: ctx().namespace_id,
                schema_id: id("claims"),
                version: id(version),
                schema,
                description: None,
                created_at: Timestamp::UnixMillis(0),
                signing: None,
            },
        )
        .await
        .unwrap();
    };
    register(
        "v1",
        json!({"type": "object", "properties": {"ca": {"type": "boolean"}}}),
    )
    .await;
    let shaped = |payload: Value| PrecheckRequest {
        scenario_id: id("s"),
        stage_id: None,
        evidence: BTreeMap::new(),
        data_shape: Some(DataShapeId {
            schema_id: id("claims"),
            version: id("v1"),
        }),
        payload: Some(payload),
    };
    let passed = gate
        .precheck(&ctx(), shaped(json!({"ca": true})))
        .await
        .unwrap();
    assert!(
        matches!(passed.decision, DecisionOutcome::Advance { .. }),
        "{passed:?}"
    );
    // The first stage has exactly one condition, so a bare value is its evidence, when the
    // shape allows one.
    register("bare", json!({"type": "boolean"})).await;
    let bare = PrecheckRequest {
        data_shape: Some(DataShapeId {
            schema_id: id("claims"),
            version: id("bare"),
        }),
        ..shaped(json!(true))
    };
    let passed_bare = gate.precheck(&ctx(), bare).await.unwrap();
    assert_eq!(passed_bare, passed);
    let err = gate
        .precheck(&ctx(), shaped(json!(false)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "payload"),
        "the shape wants an object: {err}"
    );
    let err = gate
        .precheck(&ctx(), shaped(json!({"ca": "yes"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "payload.ca"),
        "{err}"
    );
    let err = gate
        .precheck(&ctx(), shaped(json!({"cz": true})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "payload.cz"),
        "{err}"
    );
    let unknown_shape = PrecheckRequest {
        data_shape: Some(DataShapeId {
            schema_id: id("claims"),
            version: id("v9"),
        }),
        ..shaped(json!({}))
    };
    assert_eq!(
        gate.precheck(&ctx(), unknown_shape)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    let both = PrecheckRequest {
        evidence: [(id("ca"), EvidenceResult::json(json!(true)))].into(),
        ..shaped(json!({"ca": true}))
    };
    let err = gate.precheck(&ctx(), both).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "evidence"),
        "{err}"
    );
    let shape_without_payload = PrecheckRequest {
        payload: None,
        ..shaped(json!({}))
    };
    let err = gate
        .precheck(&ctx(), shape_without_payload)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "payload"),
        "{err}"
    );
}

/// A caller allowed only `scenario_next` gets the gates its own trigger evaluated in the same
/// call: one authorization and one audit event, never a refusal after the decision committed.
/// A retry of the same trigger answers the recorded decision with the same gates and appends
/// nothing.
#[tokio::test]
async fn next_with_gates_is_one_call_under_one_action() {
    let facts = facts();
    let (gate, audit) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    let mut agent = ctx();
    agent.principal = Principal {
        subject: "next-only".into(),
        actions: Some([Action::ScenarioNext].into()),
        ..Principal::default()
    };
    let before = audit.events().len();
    let decided = gate
        .next_with(&agent, next_request("s", "r", "t1", 1), true)
        .await
        .unwrap();
    assert!(matches!(
        decided.result.decision.outcome,
        DecisionOutcome::Hold { .. }
    ));
    let gates = decided.gate_evaluations.expect("gates were asked for");
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].evaluation.gate_id, id("ga"));
    assert_eq!(gates[0].trigger_id, id("t1"));
    let events = audit.events();
    assert_eq!(events.len(), before + 1, "{events:#?}");
    assert_eq!(events[before].action, Action::ScenarioNext);
    assert_eq!(events[before].outcome, AuditOutcome::Success);

    let again = gate
        .next_with(&agent, next_request("s", "r", "t1", 1), true)
        .await
        .unwrap();
    assert_eq!(again.result, decided.result);
    assert_eq!(again.gate_evaluations, Some(gates));
    let head = gate
        .status(&ctx(), &id("s"), &id("r"))
        .await
        .unwrap()
        .revision;
    assert_eq!(head, 2, "the retry appended nothing");

    // Without the ask, no gates are read.
    let plain = gate
        .next_with(&agent, next_request("s", "r", "t2", 2), false)
        .await
        .unwrap();
    assert_eq!(plain.gate_evaluations, None);
}

/// Exporting with verification is one `runpack_export` call: a caller allowed only that tool
/// gets the stored runpack's report.
#[tokio::test]
async fn export_with_verification_is_one_call_under_one_action() {
    let facts = facts();
    let (gate, audit) = service(&facts);
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    let mut exporter = ctx();
    exporter.principal = Principal {
        subject: "export-only".into(),
        actions: Some([Action::RunpackExport].into()),
        ..Principal::default()
    };
    let before = audit.events().len();
    let verify = decision_gate_core::runpack::VerifyOptions::default();
    let export = gate
        .export_runpack(
            &exporter,
            &id("s"),
            &id("r"),
            Timestamp::Logical(5),
            Some(&verify),
        )
        .await
        .unwrap();
    let report = export.report.expect("verification was asked for");
    assert!(report.passed(), "{report:#?}");
    let events = audit.events();
    assert_eq!(events.len(), before + 1, "{events:#?}");
    assert_eq!(events[before].action, Action::RunpackExport);
    // The caller may not verify on its own: that is another tool.
    let denied = gate
        .verify_runpack(&exporter, &id("r"), &export.key.export_id, &verify)
        .await
        .unwrap_err();
    assert_eq!(denied.kind(), "permission_denied");
}

/// A client idempotency key makes a retried call count once; calls without one count each.
#[tokio::test]
async fn a_client_idempotency_key_meters_a_retried_call_once() {
    let facts = facts();
    let meter = Arc::new(InMemoryUsageMeter::default());
    let gate = builder(&facts).usage_meter(meter.clone()).build();
    define(&gate, &three_stages()).await;
    start(&gate, "s", "r").await;
    let tenant = ctx().tenant_id;
    let mut keyed = ctx();
    keyed.idempotency_key = Some("retry-me".into());
    for _ in 0..3 {
        gate.next(&keyed, next_request("s", "r", "t1", 1))
            .await
            .unwrap();
    }
    // define, start, and the keyed next once.
    assert_eq!(meter.total(tenant, UsageMetric::ToolCalls), 3);
    gate.next(&ctx(), next_request("s", "r", "t1", 1))
        .await
        .unwrap();
    gate.next(&ctx(), next_request("s", "r", "t1", 1))
        .await
        .unwrap();
    assert_eq!(meter.total(tenant, UsageMetric::ToolCalls), 5);
}

/// A provider whose queries take a while and that counts how many are in flight at once.
struct Slow {
    contract: ProviderContract,
    in_flight: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl EvidenceProvider for Slow {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        _query: &EvidenceQuery,
        _ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.in_flight.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, SeqCst);
        Ok(EvidenceResult::json(json!(true)))
    }
}

/// A stage's conditions are queried concurrently, never more at once than
/// `max_concurrent_queries`, and every one is answered.
#[tokio::test]
async fn evidence_queries_of_a_trigger_run_concurrently_up_to_the_limit() {
    for (limit, expected_most) in [(3, 3), (16, 8)] {
        let slow = Arc::new(Slow {
            contract: ProviderContract {
                provider_id: id("slow"),
                description: "slow".into(),
                checks: vec![CheckContract {
                    check_id: id("c"),
                    description: "c".into(),
                    params_schema: json!(true),
                    result_schema: json!(true),
                    allowed_comparators: Comparator::ALL.to_vec(),
                }],
            },
            in_flight: 0.into(),
            most: 0.into(),
        });
        let gate = DecisionGate::builder()
            .provider(slow.clone())
            .unwrap()
            .config(EngineConfig {
                limits: decision_gate_core::Limits {
                    max_concurrent_queries: limit,
                    ..Default::default()
                },
                ..EngineConfig::default()
            })
            .build();
        let names: Vec<String> = (0..8).map(|i| format!("c{i}")).collect();
        let conditions: Vec<Value> = names
            .iter()
            .map(|n| json!({"condition_id": n, "query": {"provider_id": "slow", "check_id": "c"}, "comparator": "equals", "expected": true}))
            .collect();
        let all: Vec<Value> = names.iter().map(|n| json!({"Condition": n})).collect();
        define(
            &gate,
            &json!({
                "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
                "stages": [{"stage_id": "only", "gates": [{"gate_id": "g", "requirement": {"And": all}}], "advance_to": {"kind": "terminal"}}],
                "conditions": conditions
            }),
        )
        .await;
        start(&gate, "s", "r").await;
        let decided = next(&gate, "s", "r", "t", 1).await.unwrap();
        assert!(
            matches!(decided.decision.outcome, DecisionOutcome::Complete { .. }),
            "every condition answered true"
        );
        assert_eq!(
            slow.most.load(std::sync::atomic::Ordering::SeqCst),
            expected_most,
            "limit {limit}"
        );
    }
}
