//! One transition for live and replay: a run driven through `engine::transition` alone (with the
//! same events, evidence provider, policy and dispatcher as the service) writes the journal the
//! service writes, and its runpack passes verification with replay. Hand-written scenarios
//! cover each rule (timeouts, branches, holds, completion, re-entry, refused and failed
//! disclosure); random specs and triggers cover their mixtures.

use std::sync::Arc;

use async_trait::async_trait;
use decision_gate_core::disclosure::{
    DisclosureError, DispatchReceipt, DispatchTarget, Dispatcher, PacketEnvelope, PolicyDecider,
    PolicyDecision, PolicyRule, RecordingDispatcher, StaticPolicy,
};
use decision_gate_core::engine::transition::{self, Begun};
use decision_gate_core::engine::{DisclosureContext, Plan, from_json_value, issue_packets};
use decision_gate_core::evidence::EvidenceContext;
use decision_gate_core::run::{
    EntryBody, JournalEntry, RunHead, RunKey, SafeSummary, TriggerEvent, TriggerKind,
};
use decision_gate_core::runpack::{self, ExportInput, VerifyOptions};
use decision_gate_core::spec::{PacketPayload, ScenarioSpec};
use decision_gate_core::{
    DecisionGate, DecisionOutcome, EngineConfig, EvidenceProvider, HashAlgorithm, InMemoryEvidence,
    RunStatus, Timestamp,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::*;

/// A dispatcher whose every delivery fails.
struct Failing;

#[async_trait]
impl Dispatcher for Failing {
    async fn dispatch(
        &self,
        _target: &DispatchTarget,
        _envelope: &PacketEnvelope,
        _payload: &PacketPayload,
    ) -> Result<DispatchReceipt, DisclosureError> {
        Err(DisclosureError("unreachable".into()))
    }
}

/// A policy that refuses one packet to every target.
fn deny(packet: &str) -> StaticPolicy {
    StaticPolicy {
        rules: vec![PolicyRule {
            effect: PolicyDecision::Deny,
            target_kinds: vec![],
            require_labels: vec![],
            forbid_labels: vec![],
            packet_ids: vec![id(packet)],
            stage_ids: vec![],
            scenario_ids: vec![],
        }],
        default: PolicyDecision::Permit,
    }
}

/// A run decided by the pure transition only.
struct Pure {
    plan: Plan,
    head: RunHead,
    entries: Vec<JournalEntry>,
}

/// The service's start trigger for [`start_request`]: `init` at logical 0 from `system`.
fn start_event(run: &str) -> TriggerEvent {
    TriggerEvent {
        source_id: "system".into(),
        run_id: id(run),
        ..event("init", TriggerKind::ExternalEvent, Timestamp::Logical(0))
    }
}

impl Pure {
    async fn start(spec: &Value, policy: &dyn PolicyDecider, dispatcher: &dyn Dispatcher) -> Self {
        let spec: ScenarioSpec = from_json_value(spec.clone()).expect("the spec parses");
        let scenario_id = spec.scenario_id.clone();
        let plan = Plan::compile(spec, HashAlgorithm::Sha256).expect("the spec compiles");
        let request = start_request(scenario_id.as_str(), "r");
        let event = start_event("r");
        let packets = issue_packets(
            &plan,
            0,
            DisclosureContext {
                run_id: &event.run_id,
                decision_id: &transition::first_decision_id(),
                issued_at: event.time,
                correlation_id: None,
                targets: &request.dispatch_targets,
            },
            HashAlgorithm::Sha256,
            policy,
            dispatcher,
        )
        .await
        .expect("the first stage is disclosed");
        let key = RunKey {
            tenant_id: event.tenant_id,
            namespace_id: event.namespace_id,
            run_id: event.run_id.clone(),
        };
        let started = transition::start(
            &plan,
            key,
            scenario_id,
            request.dispatch_targets,
            &event,
            packets,
        );
        let (head, entry) = started.into_entry(event, None);
        Self {
            plan,
            head,
            entries: vec![entry],
        }
    }

    /// One step, as the service takes it: timeout or evidence and gates, disclosure, apply.
    async fn step(
        &mut self,
        event: TriggerEvent,
        facts: &InMemoryEvidence,
        policy: &dyn PolicyDecider,
        dispatcher: &dyn Dispatcher,
    ) {
        let plan = &self.plan;
        let head = self.head.clone();
        let decided = match transition::begin(plan, &head, &event).expect("the step begins") {
            Begun::TimedOut(decided) => decided,
            Begun::Evaluate(pending) => {
                let ctx = EvidenceContext::for_trigger(&head, &event);
                let mut results = Vec::new();
                for (_, query) in plan.stage_conditions(pending.stage()) {
                    results.push(facts.query(query, &ctx).await.expect("facts answer"));
                }
                pending.decide(plan, results, &EngineConfig::default(), &event.trigger_id)
            }
        };
        let disclosure = match decided.discloses() {
            Some(to) => {
                let ctx = DisclosureContext {
                    run_id: &head.key.run_id,
                    decision_id: decided.decision_id(),
                    issued_at: event.time,
                    correlation_id: None,
                    targets: &head.dispatch_targets,
                };
                issue_packets(plan, to, ctx, HashAlgorithm::Sha256, policy, dispatcher).await
            }
            None => Ok(Vec::new()),
        };
        let (head, entry) =
            transition::apply(plan, head, decided, disclosure, &event).into_entry(event, None);
        self.head = head;
        self.entries.push(entry);
    }

    /// Exports the run as a runpack (export verifies it with replay and refuses a run that
    /// fails) and verifies it again with replay.
    fn assert_replays(&self) {
        let runpack = runpack::export(&ExportInput {
            spec: self.plan.spec(),
            head: &self.head,
            entries: &self.entries,
            generated_at: Timestamp::Logical(1000),
            config: &EngineConfig::default(),
            signer: None,
        })
        .unwrap_or_else(|e| panic!("the pure run exports: {e}"));
        let report = runpack::verify(
            &runpack::files_reader(&runpack.files),
            &VerifyOptions {
                replay: true,
                ..VerifyOptions::default()
            },
        );
        assert!(report.replayed);
        assert!(report.passed(), "{:#?}", report.failures);
    }
}

/// The service's journal without its tool-call records, which the transport's call adds.
async fn live_entries(gate: &DecisionGate, scenario: &str) -> Vec<JournalEntry> {
    let mut entries = journal(gate, scenario, "r").await;
    for entry in &mut entries {
        if let EntryBody::Trigger(t) = &mut entry.body {
            t.tool_call = None;
        }
    }
    entries
}

/// A trigger's kind and logical time, and the facts set before it.
type Trigger<'a> = (TriggerKind, u64, &'a [(&'a str, Value)]);
type Triggers<'a> = &'a [Trigger<'a>];

/// Drives `spec` through the service and through the pure transition side by side: before
/// each trigger the facts are set as given, and the pure run skips a trigger once it has
/// ended, as the service records nothing for it. Returns every decision's outcome.
async fn side_by_side(
    spec: &Value,
    policy: Arc<StaticPolicy>,
    dispatcher: Arc<dyn Dispatcher>,
    triggers: Triggers<'_>,
) -> Vec<DecisionOutcome> {
    let scenario = spec["scenario_id"]
        .as_str()
        .expect("a scenario id")
        .to_owned();
    let facts = facts();
    let gate = builder(&facts)
        .policy(policy.clone())
        .dispatcher(dispatcher.clone())
        .build();
    define(&gate, spec).await;
    start(&gate, &scenario, "r").await;
    let mut pure = Pure::start(spec, policy.as_ref(), dispatcher.as_ref()).await;
    for (i, (kind, time, facts_now)) in triggers.iter().enumerate() {
        for (check, value) in *facts_now {
            set(&facts, check, value.clone());
        }
        let event = event(&format!("t{i}"), *kind, Timestamp::Logical(*time));
        gate.trigger(&ctx(), &id(&scenario), event.clone())
            .await
            .expect("the service decides");
        if pure.head.status == RunStatus::Active {
            pure.step(event, &facts, policy.as_ref(), dispatcher.as_ref())
                .await;
        }
    }
    assert_eq!(
        live_entries(&gate, &scenario).await,
        pure.entries,
        "the service and the pure transition record the same run"
    );
    let status = gate
        .status(&ctx(), &id(&scenario), &id("r"))
        .await
        .expect("status");
    assert_eq!(
        (
            &status.current_stage_id,
            status.status,
            &status.last_decision,
            status.revision
        ),
        (
            &pure.head.current_stage_id,
            pure.head.status,
            &pure.head.last_decision,
            pure.head.revision
        )
    );
    pure.assert_replays();
    pure.entries
        .into_iter()
        .filter_map(|e| match e.body {
            EntryBody::Trigger(t) => Some(t.decision.outcome),
            EntryBody::Submission(_) => None,
        })
        .collect()
}

/// `wait` has a 5-tick timeout and branches when asked (unknown → `late`, else `done`); `done`
/// discloses `pd` and returns to `wait`, so the run re-enters the timed stage.
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
                "payload": {"kind": "json", "value": "done"}}], "advance_to": {"kind": "fixed", "stage_id": "wait"}},
            {"stage_id": "late", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("c", "a")]
    })
}

/// `one` (gate on `a`; false branches to `three`, else `two`) discloses `p1`; `two` (gate on
/// `b`) discloses `p2`; `three` completes.
fn forked() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [{"gate_id": "ga", "requirement": {"Condition": "ca"}}],
             "entry_packets": [{"packet_id": "p1", "schema_id": "x", "content_type": "application/json",
                                "payload": {"kind": "json", "value": {"hello": 1}}}],
             "advance_to": {"kind": "branch", "branches": [{"gate_id": "ga", "outcome": "false", "next_stage_id": "three"}], "default": "two"}},
            {"stage_id": "two", "gates": [{"gate_id": "gb", "requirement": {"Condition": "cb"}}],
             "entry_packets": [{"packet_id": "p2", "schema_id": "x", "content_type": "application/octet-stream",
                                "payload": {"kind": "bytes", "bytes": [1, 2, 3]}}],
             "advance_to": {"kind": "linear"}},
            {"stage_id": "three", "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("ca", "a"), cond("cb", "b")]
    })
}

fn start_in(stage: &str) -> DecisionOutcome {
    DecisionOutcome::Start {
        stage_id: id(stage),
    }
}

fn hold(gate: &str) -> DecisionOutcome {
    DecisionOutcome::Hold {
        summary: SafeSummary {
            status: "hold".into(),
            unmet_gates: vec![id(gate)],
            retry_hint: "await_evidence".into(),
            policy_tags: Vec::new(),
        },
    }
}

fn advance(from: &str, to: &str, timeout: bool) -> DecisionOutcome {
    DecisionOutcome::Advance {
        from_stage: id(from),
        to_stage: id(to),
        timeout,
    }
}

fn fail(reason: &str) -> DecisionOutcome {
    DecisionOutcome::Fail {
        reason: reason.into(),
    }
}

fn complete(stage: &str) -> DecisionOutcome {
    DecisionOutcome::Complete {
        stage_id: id(stage),
    }
}

#[tokio::test]
async fn each_rule_is_decided_alike_live_and_pure_and_replays() {
    use TriggerKind::{AgentRequestNext as Next, Tick};
    let permit = || Arc::new(StaticPolicy::permit_all());
    let record = || Arc::new(RecordingDispatcher) as Arc<dyn Dispatcher>;
    let (t, f) = (json!(true), json!(false));

    // Ticks before, at and after each deadline, across re-entries of `wait`.
    let timed_triggers: Triggers<'_> = &[
        (Tick, 3, &[]),
        (Next, 4, &[]),
        (Tick, 9, &[("a", t.clone())]),
        (Next, 12, &[]),
        (Tick, 20, &[("a", f.clone())]),
        (Next, 30, &[]),
        (Tick, 40, &[]),
        (Tick, 50, &[]),
    ];
    let held = [start_in("wait"), hold("g"), hold("g")];
    assert_eq!(
        side_by_side(&timed("fail", false), permit(), record(), timed_triggers).await,
        [&held[..], &[fail("timeout")]].concat(),
        "held until the deadline, which fails the run"
    );
    assert_eq!(
        side_by_side(
            &timed("advance_with_flag", false),
            permit(),
            record(),
            timed_triggers
        )
        .await,
        [
            &held[..],
            &[
                advance("wait", "done", true),
                advance("done", "wait", false),
                advance("wait", "done", true),
                advance("done", "wait", false),
                advance("wait", "done", true),
                advance("done", "wait", false),
            ]
        ]
        .concat(),
        "each re-entry of `wait` times out from its own entry"
    );
    assert_eq!(
        side_by_side(
            &timed("advance_with_flag", false),
            permit(),
            Arc::new(Failing),
            timed_triggers
        )
        .await,
        [&held[..], &[fail("dispatch failed: unreachable")]].concat(),
        "a failed delivery turns the timeout's advance into a fail"
    );
    assert_eq!(
        side_by_side(
            &timed("alternate_branch", true),
            permit(),
            record(),
            &[
                (Tick, 3, &[("a", f.clone())]),
                (Tick, 9, &[("a", t.clone())]),
                (Next, 10, &[]),
            ]
        )
        .await,
        [
            start_in("wait"),
            hold("g"),
            advance("wait", "late", true),
            complete("late")
        ],
        "the timeout routes through the unknown rule, whatever the evidence"
    );

    let forked_triggers: Triggers<'_> = &[
        (Next, 1, &[]),
        (Next, 2, &[("a", t.clone())]),
        (Next, 3, &[]),
        (Next, 4, &[("b", t.clone())]),
        (Next, 5, &[]),
    ];
    assert_eq!(
        side_by_side(&forked(), permit(), record(), forked_triggers).await,
        [
            start_in("one"),
            hold("ga"),
            advance("one", "two", false),
            hold("gb"),
            advance("two", "three", false),
            complete("three"),
        ],
        "holds, the branch default, an advance and completion"
    );
    assert_eq!(
        side_by_side(
            &forked(),
            permit(),
            record(),
            &[(Next, 1, &[("a", f.clone())]), (Next, 2, &[])]
        )
        .await,
        [
            start_in("one"),
            advance("one", "three", false),
            complete("three")
        ],
        "the branch on false"
    );
    assert_eq!(
        side_by_side(&forked(), Arc::new(deny("p2")), record(), forked_triggers).await,
        [
            start_in("one"),
            hold("ga"),
            fail("policy denied disclosure")
        ],
        "a refused disclosure fails the run"
    );
}

#[derive(Clone, Debug)]
struct Step {
    kind: TriggerKind,
    time: u64,
    a: Option<Value>,
    b: Option<Value>,
}

fn step() -> impl Strategy<Value = Step> {
    let value = prop::option::of(prop_oneof![
        Just(json!(true)),
        Just(json!(false)),
        Just(json!(2))
    ]);
    (
        prop::sample::select(
            &[
                TriggerKind::AgentRequestNext,
                TriggerKind::Tick,
                TriggerKind::ExternalEvent,
            ][..],
        ),
        0u64..20,
        value.clone(),
        value,
    )
        .prop_map(|(kind, time, a, b)| Step { kind, time, a, b })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_runs_are_decided_alike_live_and_pure_and_replay(
        spec in crate::properties::valid_spec(),
        steps in prop::collection::vec(step(), 1..10),
        deny_second in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            // Refusing the second stage's packet (the first stage's is disclosed at start).
            let policy = Arc::new(if deny_second { deny("p-s1") } else { StaticPolicy::permit_all() });
            let facts: Vec<Vec<(&str, Value)>> = steps
                .iter()
                .map(|s| {
                    [("a", &s.a), ("b", &s.b)]
                        .into_iter()
                        .filter_map(|(check, v)| v.clone().map(|v| (check, v)))
                        .collect()
                })
                .collect();
            let triggers: Vec<Trigger<'_>> = steps
                .iter()
                .zip(&facts)
                .map(|(s, f)| (s.kind, s.time, f.as_slice()))
                .collect();
            side_by_side(&spec, policy, Arc::new(RecordingDispatcher), &triggers).await;
        });
    }
}
