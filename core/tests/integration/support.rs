//! Shared fixtures: a service with host-set facts, request builders, and journal digests.

use std::sync::Arc;

use decision_gate_core::access::InMemoryAuditSink;
use decision_gate_core::run::{EntryBody, JournalEntry, TriggerEvent, TriggerKind};
use decision_gate_core::service::{DecisionGateBuilder, StartResult};
use decision_gate_core::{
    CheckId, DecisionGate, EngineConfig, Error, HashAlgorithm, InMemoryEvidence, NamespaceId,
    NextRequest, RequestContext, RunId, ScenarioId, StartRequest, TenantId, Timestamp,
    TriggerResult,
};
use serde_json::Value;

/// Parses a test id.
pub(crate) fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("valid test id")
}

/// Tenant 1, namespace 1, local caller.
pub(crate) fn ctx() -> RequestContext {
    ctx_in(1, 1)
}

/// A local caller in tenant `t`, namespace `ns`.
pub(crate) fn ctx_in(t: u64, ns: u64) -> RequestContext {
    RequestContext::local(TenantId::new(t).unwrap(), NamespaceId::new(ns).unwrap())
}

/// The `facts` provider with checks `a`..`h`, answers set by the test.
pub(crate) fn facts() -> Arc<InMemoryEvidence> {
    Arc::new(InMemoryEvidence::new(
        id("facts"),
        ["a", "b", "c", "d", "e", "f", "g", "h"].map(id::<CheckId>),
    ))
}

/// Sets check `check` of `facts` to `value`.
pub(crate) fn set(facts: &InMemoryEvidence, check: &str, value: Value) {
    facts.set_json(&id(check), value);
}

/// A builder with the facts provider registered.
pub(crate) fn builder(facts: &Arc<InMemoryEvidence>) -> DecisionGateBuilder {
    DecisionGate::builder()
        .provider(facts.clone())
        .expect("register facts")
}

/// A service over memory with the facts provider and an inspectable audit sink.
pub(crate) fn service(facts: &Arc<InMemoryEvidence>) -> (DecisionGate, Arc<InMemoryAuditSink>) {
    let audit = Arc::new(InMemoryAuditSink::default());
    (builder(facts).audit_sink(audit.clone()).build(), audit)
}

/// A service with a custom engine configuration.
pub(crate) fn service_with(facts: &Arc<InMemoryEvidence>, config: EngineConfig) -> DecisionGate {
    builder(facts).config(config).build()
}

/// A condition on `facts.<check>` equal to `true`.
pub(crate) fn cond(name: &str, check: &str) -> Value {
    serde_json::json!({
        "condition_id": name,
        "query": {"provider_id": "facts", "check_id": check},
        "comparator": "equals",
        "expected": true
    })
}

/// Defines `spec` in tenant 1 / namespace 1.
pub(crate) async fn define(gate: &DecisionGate, spec: &Value) {
    gate.define_scenario_json(&ctx(), &spec.to_string())
        .await
        .expect("define the test scenario");
}

/// Starts `run` of `scenario` at logical time 0.
pub(crate) async fn start(gate: &DecisionGate, scenario: &str, run: &str) -> StartResult {
    gate.start_run(&ctx(), start_request(scenario, run))
        .await
        .expect("start the test run")
}

/// A start request at logical time 0 with one agent target.
pub(crate) fn start_request(scenario: &str, run: &str) -> StartRequest {
    StartRequest {
        scenario_id: id(scenario),
        run_id: id(run),
        dispatch_targets: vec![decision_gate_core::disclosure::DispatchTarget::Agent {
            agent_id: "agent-1".into(),
        }],
        started_at: Timestamp::Logical(0),
    }
}

/// A next request at logical `time`.
pub(crate) fn next_request(scenario: &str, run: &str, trigger: &str, time: u64) -> NextRequest {
    NextRequest {
        scenario_id: id(scenario),
        run_id: id(run),
        trigger_id: id(trigger),
        agent_id: "agent-1".into(),
        time: Timestamp::Logical(time),
    }
}

/// A trigger of `kind` at `time` on run `r` of tenant 1 / namespace 1, with no payload.
pub(crate) fn event(trigger: &str, kind: TriggerKind, time: Timestamp) -> TriggerEvent {
    TriggerEvent {
        trigger_id: id(trigger),
        tenant_id: ctx().tenant_id,
        namespace_id: ctx().namespace_id,
        run_id: id("r"),
        kind,
        time,
        source_id: "test".into(),
        payload: None,
        correlation_id: None,
    }
}

/// Sends `next` for `trigger` at logical `time`.
pub(crate) async fn next(
    gate: &DecisionGate,
    scenario: &str,
    run: &str,
    trigger: &str,
    time: u64,
) -> Result<TriggerResult, Error> {
    gate.next(&ctx(), next_request(scenario, run, trigger, time))
        .await
}

/// The whole journal of a run.
pub(crate) async fn journal(gate: &DecisionGate, scenario: &str, run: &str) -> Vec<JournalEntry> {
    journal_in(gate, &ctx(), scenario, run).await
}

/// The whole journal of a run, in a given context.
pub(crate) async fn journal_in(
    gate: &DecisionGate,
    ctx: &RequestContext,
    scenario: &str,
    run: &str,
) -> Vec<JournalEntry> {
    let (scenario, run): (ScenarioId, RunId) = (id(scenario), id(run));
    let mut all = Vec::new();
    loop {
        let page = gate
            .journal(ctx, &scenario, &run, all.len() as u64, 1000)
            .await
            .expect("read the journal");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// Digests of the run's decision log and gate-evaluation log, the way a runpack lays them out.
pub(crate) fn log_digests(entries: &[JournalEntry]) -> (String, String) {
    let mut decisions = Vec::new();
    let mut gate_evals = Vec::new();
    for e in entries {
        if let EntryBody::Trigger(t) = &e.body {
            decisions.push(t.decision.clone());
            gate_evals.extend(t.gate_evals.iter().cloned());
        }
    }
    let sha256 = HashAlgorithm::Sha256;
    (
        sha256.digest_json(&decisions).expect("hashable").value,
        sha256.digest_json(&gate_evals).expect("hashable").value,
    )
}
