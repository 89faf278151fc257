//! Count limits: every list a spec, a request or a run can carry is refused over its limit as
//! invalid input naming the field, the count and the limit, and the refusal stores nothing.

use decision_gate_core::disclosure::DispatchTarget;
use decision_gate_core::engine::SpecError;
use decision_gate_core::ret::TriState;
use decision_gate_core::service::PrecheckRequest;
use decision_gate_core::store::PageRequest;
use decision_gate_core::{DecisionGate, EngineConfig, Error, EvidenceResult, Limits};
use serde_json::{Value, json};

use crate::support::*;

/// A service whose count limits are all small, so each test crosses one with a few items.
fn small() -> DecisionGate {
    service_with(
        &facts(),
        EngineConfig {
            limits: Limits {
                max_stages: 2,
                max_gates_per_stage: 2,
                max_conditions: 2,
                max_tree_nodes: 3,
                max_packets_per_stage: 2,
                max_dispatch_targets: 3,
                max_disclosures: 4,
                max_array_items: 3,
                max_list_items: 2,
                max_page_size: 5,
                ..Limits::default()
            },
            ..EngineConfig::default()
        },
    )
}

fn packet(id: &str) -> Value {
    json!({"packet_id": id, "schema_id": "x", "content_type": "text/plain",
           "payload": {"kind": "json", "value": "hi"}})
}

/// Within every small limit: one stage with two packets, one gate of three nodes.
fn fits() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "entry_packets": [packet("p1"), packet("p2")],
                    "gates": [{"gate_id": "g", "requirement": {"And": [{"Condition": "ca"}, {"Condition": "cb"}]}}],
                    "advance_to": {"kind": "terminal"}}],
        "conditions": [cond("ca", "a"), cond("cb", "b")]
    })
}

async fn spec_errors(gate: &DecisionGate, spec: &Value) -> Vec<SpecError> {
    let err = gate
        .define_scenario_json(&ctx(), &spec.to_string())
        .await
        .expect_err("over a count limit");
    let listed = gate
        .list_scenarios(&ctx(), PageRequest::first(5))
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "a refused spec stores nothing");
    assert_eq!(err.kind().as_str(), "invalid_input");
    match err {
        Error::InvalidSpec(errors) => errors,
        other => panic!("expected InvalidSpec, got {other}"),
    }
}

#[tokio::test]
async fn a_spec_within_every_limit_is_accepted() {
    define(&small(), &fits()).await;
}

/// An edit that takes the fitting spec over one limit.
type Change<'a> = Box<dyn Fn(&mut Value) + 'a>;

#[tokio::test]
async fn every_spec_list_over_its_limit_is_named_with_its_count_and_limit() {
    let stage = |id: &str| json!({"stage_id": id, "advance_to": {"kind": "terminal"}});
    let cases: Vec<(Change, &str, &str)> = vec![
        (
            Box::new(|v| v["stages"] = json!([stage("a"), stage("b"), stage("c")])),
            "stages",
            "3 stages; the limit is 2",
        ),
        (
            Box::new(|v| {
                let gate = |g: &str| json!({"gate_id": g, "requirement": {"Condition": "ca"}});
                v["stages"][0]["gates"] = json!([gate("g1"), gate("g2"), gate("g3")]);
            }),
            "stages[0].gates",
            "3 gates; the limit is 2",
        ),
        (
            Box::new(|v| {
                v["conditions"] = json!([cond("ca", "a"), cond("cb", "b"), cond("cc", "c")])
            }),
            "conditions",
            "3 conditions; the limit is 2",
        ),
        (
            Box::new(|v| {
                v["stages"][0]["gates"][0]["requirement"] =
                    json!({"And": [{"Condition": "ca"}, {"Not": {"Condition": "cb"}}]});
            }),
            "stages[0].gates[0].requirement",
            "4 requirement nodes; the limit is 3",
        ),
        (
            Box::new(|v| {
                v["stages"][0]["entry_packets"] = json!([packet("p1"), packet("p2"), packet("p3")]);
            }),
            "stages[0].entry_packets",
            "3 packets; the limit is 2",
        ),
        (
            Box::new(|v| v["conditions"][1]["expected"] = json!({"any": [[1, 2, 3, 4]]})),
            "conditions[1].expected.any[0]",
            "4 array items; the limit is 3",
        ),
        (
            Box::new(|v| {
                v["policies"] = json!([{"policy_id": "a"}, {"policy_id": "b"}, {"policy_id": "c"}])
            }),
            "policies",
            "3 policies; the limit is 2",
        ),
        (
            Box::new(|v| {
                v["schemas"] = json!([{"schema_id": "a"}, {"schema_id": "b"}, {"schema_id": "c"}])
            }),
            "schemas",
            "3 schemas; the limit is 2",
        ),
        (
            Box::new(|v| v["conditions"][0]["policy_tags"] = json!(["a", "b", "c"])),
            "conditions[0].policy_tags",
            "3 tags; the limit is 2",
        ),
        (
            Box::new(|v| {
                v["stages"][0]["entry_packets"][1]["visibility_labels"] = json!(["a", "b", "c"])
            }),
            "stages[0].entry_packets[1].visibility_labels",
            "3 labels; the limit is 2",
        ),
        (
            Box::new(|v| {
                let rule = json!({"gate_id": "g", "outcome": "true", "next_stage_id": "one"});
                v["stages"][0]["advance_to"] =
                    json!({"kind": "branch", "branches": [rule, rule, rule], "default": "one"});
            }),
            "stages[0].advance_to.branches",
            "3 branch rules; the limit is 2",
        ),
    ];
    let gate = small();
    for (change, path, rule) in cases {
        let mut spec = fits();
        change(&mut spec);
        let errors = spec_errors(&gate, &spec).await;
        assert_eq!(
            errors,
            vec![SpecError {
                path: path.into(),
                rule: rule.into()
            }],
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_spec_over_a_count_limit_is_refused_on_its_counts_alone() {
    // Three conditions with the same id would each be a duplicate-id error; over the count
    // limit only the count is reported, so the rules never run over an unbounded list.
    let mut spec = fits();
    spec["conditions"] = json!([cond("ca", "a"), cond("ca", "a"), cond("ca", "a")]);
    let errors = spec_errors(&small(), &spec).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "conditions");
}

fn targets(n: usize) -> Vec<DispatchTarget> {
    (0..n)
        .map(|i| DispatchTarget::Agent {
            agent_id: format!("agent-{i}"),
        })
        .collect()
}

async fn start_with(gate: &DecisionGate, n: usize) -> Result<(), Error> {
    let mut request = start_request("s", "r");
    request.dispatch_targets = targets(n);
    gate.start_run(&ctx(), request).await.map(|_| ())
}

#[tokio::test]
async fn dispatch_targets_and_the_disclosures_they_multiply_are_bounded() {
    let gate = small();
    define(&gate, &fits()).await;
    // Four targets: over max_dispatch_targets (3).
    let err = start_with(&gate, 4).await.unwrap_err();
    assert_eq!(err.kind().as_str(), "invalid_input");
    assert_eq!(
        err.to_string(),
        "dispatch_targets: 4 targets; the limit is 3"
    );
    // Three targets x two entry packets = six disclosures: over max_disclosures (4).
    let err = start_with(&gate, 3).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "dispatch_targets: 3 targets x 2 entry packets of one stage = 6 disclosures; the limit is 4"
    );
    let status = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap_err();
    assert_eq!(
        status.kind().as_str(),
        "not_found",
        "a refused start stores nothing"
    );
    // Two targets x two packets = four: within the limit.
    start_with(&gate, 2).await.unwrap();
}

#[tokio::test]
async fn the_reported_abuse_is_refused_at_the_defaults() {
    // 200 entry packets x 5,000 targets once grew the server by ~640 MB before timing out.
    let gate = service_with(&facts(), EngineConfig::default());
    let mut spec = fits();
    spec["stages"][0]["entry_packets"] =
        Value::Array((0..200).map(|i| packet(&format!("p{i}"))).collect());
    let errors = spec_errors(&gate, &spec).await;
    assert_eq!(errors[0].path, "stages[0].entry_packets");
    assert_eq!(errors[0].rule, "200 packets; the limit is 64");
    spec["stages"][0]["entry_packets"] =
        Value::Array((0..64).map(|i| packet(&format!("p{i}"))).collect());
    define(&gate, &spec).await;
    let err = start_with(&gate, 5_000).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "dispatch_targets: 5000 targets; the limit is 64"
    );
    let err = start_with(&gate, 64).await.unwrap_err();
    assert!(
        err.to_string().ends_with(
            "64 targets x 64 entry packets of one stage = 4096 disclosures; the limit is 1024"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn asserted_evidence_arrays_are_bounded() {
    let gate = small();
    define(&gate, &fits()).await;
    let request = |evidence: Value| PrecheckRequest {
        scenario_id: id("s"),
        stage_id: None,
        evidence: [(id("ca"), EvidenceResult::json(evidence))].into(),
        data_shape: None,
        payload: None,
    };
    let err = gate
        .precheck(&ctx(), request(json!([[1], [1, 2, 3, 4]])))
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "invalid_input");
    assert_eq!(
        err.to_string(),
        "evidence.ca.value[1]: 4 array items; the limit is 3"
    );
    gate.precheck(&ctx(), request(json!([1, 2, 3])))
        .await
        .unwrap();
}

#[tokio::test]
async fn page_sizes_are_bounded_by_the_configured_limit() {
    let gate = small();
    define(&gate, &fits()).await;
    let err = gate
        .list_scenarios(&ctx(), PageRequest::first(6))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "limit: must be between 1 and 5, got 6");
    start(&gate, "s", "r").await;
    let err = gate
        .journal(&ctx(), &id("s"), &id("r"), 0, 6)
        .await
        .unwrap_err();
    assert_eq!(err.kind().as_str(), "invalid_input");
    assert_eq!(
        gate.list_scenarios(&ctx(), PageRequest::first(5))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn a_large_evaluation_runs_off_the_async_workers_with_the_same_answer() {
    // 10,000 expected items: over the inline budget, so the precheck evaluates on the blocking
    // pool; a small set evaluates inline. Both answer as a scan would.
    // Precheck evidence is asserted: the trust floor must admit it.
    let gate = service_with(
        &facts(),
        EngineConfig {
            trust: decision_gate_core::evidence::TrustRequirement {
                min_lane: decision_gate_core::TrustLane::Asserted,
            },
            ..EngineConfig::default()
        },
    );
    let items = |n: usize| -> Vec<Value> { (0..n).map(|i| json!(format!("i{i:05}"))).collect() };
    for (id, n) in [("big", 10_000), ("small", 10)] {
        let spec = json!({
            "scenario_id": id, "namespace_id": 1, "spec_version": "1",
            "stages": [{"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                        "advance_to": {"kind": "terminal"}}],
            "conditions": [{"condition_id": "c", "query": {"provider_id": "facts", "check_id": "a"},
                            "comparator": "contains", "expected": items(n)}]
        });
        define(&gate, &spec).await;
        let precheck = |observed: Vec<Value>| PrecheckRequest {
            scenario_id: id.parse().unwrap(),
            stage_id: None,
            evidence: [(id_of("c"), EvidenceResult::json(Value::Array(observed)))].into(),
            data_shape: None,
            payload: None,
        };
        let mut all = items(n);
        all.reverse();
        let passed = gate.precheck(&ctx(), precheck(all)).await.unwrap();
        assert_eq!(passed.gate_evaluations[0].status, TriState::True, "{id}");
        let missing_one = items(n - 1);
        let failed = gate.precheck(&ctx(), precheck(missing_one)).await.unwrap();
        assert_eq!(failed.gate_evaluations[0].status, TriState::False, "{id}");
    }
}

fn id_of(s: &str) -> decision_gate_core::ConditionId {
    s.parse().unwrap()
}

#[test]
fn evaluation_work_counts_expected_and_observed_items_and_a_stop_ends_it() {
    use decision_gate_core::engine::Plan;
    use std::sync::atomic::AtomicBool;
    let mut spec = fits();
    spec["conditions"][0]["expected"] = json!([1, 2, 3]);
    spec["conditions"][0]["comparator"] = json!("contains");
    let spec: decision_gate_core::spec::ScenarioSpec = serde_json::from_value(spec).unwrap();
    let plan = Plan::compile(spec, decision_gate_core::HashAlgorithm::Sha256).unwrap();
    // Two comparisons (1 + 3 expected items, 1) and a gate of three nodes; no evidence.
    assert_eq!(plan.work(0, &[]), 4 + 1 + 3);
    let results = vec![
        EvidenceResult::json(json!([1, 2, 3, 4, 5])),
        EvidenceResult::json(json!(true)),
    ];
    assert_eq!(plan.work(0, &results), 8 + 6 + 1);
    let trigger = "t".parse().unwrap();
    let config = EngineConfig::default();
    let stopped = AtomicBool::new(true);
    assert!(
        plan.evaluate_stage_until(0, results.clone(), &config, &trigger, &stopped)
            .is_none()
    );
    let running = AtomicBool::new(false);
    let outcome = plan
        .evaluate_stage_until(0, results, &config, &trigger, &running)
        .expect("not stopped");
    assert_eq!(outcome.gate_records.len(), 1);
}
