//! Metamorphic determinism: reordering the spec's conditions, shuffling the query order and
//! running many runs concurrently all give identical decision logs and hashes.

use std::sync::Arc;

use decision_gate_core::engine::ConditionOrder;
use decision_gate_core::{DecisionGate, EngineConfig, InMemoryEvidence};
use serde_json::{Value, json};

use crate::support::*;

/// Two stages over conditions whose ids sort differently as text and as numbers.
fn spec(conditions: Vec<Value>) -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [
                {"gate_id": "g1", "requirement": {"And": [{"Condition": "a10"}, {"Condition": "a2"}, {"Or": [{"Condition": "b"}, {"Condition": "a1"}]}]}},
                {"gate_id": "g2", "requirement": {"RequireGroup": {"min": 2, "reqs": [{"Condition": "a2"}, {"Condition": "c"}, {"Condition": "b"}]}}}
            ], "advance_to": {"kind": "linear"}},
            {"stage_id": "two", "gates": [{"gate_id": "g3", "requirement": {"Not": {"Condition": "d"}}}], "advance_to": {"kind": "terminal"}}
        ],
        "conditions": conditions
    })
}

fn conditions() -> Vec<Value> {
    vec![
        cond("a10", "a"),
        cond("a2", "b"),
        cond("a1", "c"),
        cond("b", "d"),
        cond("c", "e"),
        cond("d", "f"),
    ]
}

/// Drives a run through holds to completion, changing evidence between triggers.
async fn drive(gate: &DecisionGate, facts: &InMemoryEvidence, run: &str) {
    start(gate, "s", run).await;
    next(gate, "s", run, "t1", 1).await.unwrap();
    for (check, value) in [("a", true), ("b", true), ("c", false), ("d", true)] {
        set(facts, check, json!(value));
    }
    next(gate, "s", run, "t2", 2).await.unwrap();
    set(facts, "e", json!("not a bool"));
    next(gate, "s", run, "t3", 3).await.unwrap();
    set(facts, "f", json!(false));
    next(gate, "s", run, "t4", 4).await.unwrap();
    next(gate, "s", run, "t5", 5).await.unwrap();
}

async fn digests_for(conditions: Vec<Value>, order: ConditionOrder) -> (String, String) {
    let facts = facts();
    let gate = service_with(
        &facts,
        EngineConfig {
            condition_order: order,
            ..EngineConfig::default()
        },
    );
    define(&gate, &spec(conditions)).await;
    drive(&gate, &facts, "r").await;
    log_digests(&journal(&gate, "s", "r").await)
}

#[tokio::test]
async fn reordering_conditions_changes_no_decision_or_hash() {
    let baseline = digests_for(conditions(), ConditionOrder::Spec).await;
    let mut reversed = conditions();
    reversed.reverse();
    let mut rotated = conditions();
    rotated.rotate_left(2);
    for permutation in [reversed, rotated] {
        assert_eq!(
            digests_for(permutation, ConditionOrder::Spec).await,
            baseline
        );
    }
}

#[tokio::test]
async fn shuffled_query_order_gives_an_identical_journal() {
    let journal_digest = |seed: Option<u64>| async move {
        let facts = facts();
        let order = seed.map_or(ConditionOrder::Spec, |seed| {
            ConditionOrder::DeterministicShuffle { seed }
        });
        let gate = service_with(
            &facts,
            EngineConfig {
                condition_order: order,
                ..EngineConfig::default()
            },
        );
        define(&gate, &spec(conditions())).await;
        drive(&gate, &facts, "r").await;
        decision_gate_core::HashAlgorithm::Sha256
            .digest_json(&journal(&gate, "s", "r").await)
            .unwrap()
    };
    let baseline = journal_digest(None).await;
    assert_eq!(journal_digest(Some(7)).await, baseline);
    assert_eq!(journal_digest(Some(11)).await, baseline);
}

#[tokio::test]
async fn shuffle_seeds_change_the_query_order() {
    let plan = decision_gate_core::engine::Plan::compile(
        serde_json::from_value(spec(conditions())).unwrap(),
        decision_gate_core::HashAlgorithm::Sha256,
    )
    .unwrap();
    let seven = plan.query_order(0, ConditionOrder::DeterministicShuffle { seed: 7 });
    let eleven = plan.query_order(0, ConditionOrder::DeterministicShuffle { seed: 11 });
    assert_eq!(
        plan.query_order(0, ConditionOrder::DeterministicShuffle { seed: 7 }),
        seven,
        "stable per seed"
    );
    assert_ne!(seven, eleven);
    assert_eq!(
        plan.query_order(0, ConditionOrder::Spec),
        (0..5).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn evidence_is_recorded_in_condition_id_byte_order() {
    let facts = facts();
    let (gate, _) = service(&facts);
    define(&gate, &spec(conditions())).await;
    drive(&gate, &facts, "r").await;
    let entries = journal(&gate, "s", "r").await;
    let decision_gate_core::run::EntryBody::Trigger(t) = &entries[1].body else {
        panic!()
    };
    let ids: Vec<_> = t.gate_evals[0]
        .evidence
        .iter()
        .map(|e| e.condition_id.to_string())
        .collect();
    assert_eq!(ids, ["a1", "a10", "a2", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_give_identical_logs() {
    // Every run sees the same evidence at each step; the runs' triggers interleave freely.
    let runs: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let shared = facts();
    let gate = Arc::new(service(&shared).0);
    define(&gate, &spec(conditions())).await;
    for run in &runs {
        start(&gate, "s", run).await;
    }
    let steps: [(&str, Vec<(&str, Value)>); 5] = [
        ("t1", vec![]),
        (
            "t2",
            vec![
                ("a", json!(true)),
                ("b", json!(true)),
                ("c", json!(false)),
                ("d", json!(true)),
            ],
        ),
        ("t3", vec![("e", json!("x"))]),
        ("t4", vec![("f", json!(false))]),
        ("t5", vec![]),
    ];
    for (time, (trigger, updates)) in steps.into_iter().enumerate() {
        for (check, value) in updates {
            set(&shared, check, value);
        }
        let tasks: Vec<_> = runs
            .iter()
            .map(|run| {
                let gate = gate.clone();
                let run = run.clone();
                tokio::spawn(async move {
                    next(&gate, "s", &run, trigger, time as u64 + 1)
                        .await
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let mut digests = Vec::new();
    for run in &runs {
        digests.push(log_digests(&journal(&gate, "s", run).await));
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
    let sequential = digests_for(conditions(), ConditionOrder::Spec).await;
    assert_eq!(
        digests[0], sequential,
        "concurrent runs decide exactly as a lone run"
    );
}

#[test]
fn the_hot_path_agrees_with_the_recorded_evaluation() {
    use decision_gate_core::engine::{OutcomeBuffers, Plan};
    use decision_gate_core::evidence::EvidenceValue;
    let plan = Plan::compile(
        serde_json::from_value(spec(conditions())).unwrap(),
        decision_gate_core::HashAlgorithm::Sha256,
    )
    .unwrap();
    let config = EngineConfig::default();
    let mut buffers = OutcomeBuffers::default();
    let answers = [json!(true), json!(false), json!("x")];
    for combo in 0..(3usize.pow(5)) {
        let values: Vec<EvidenceValue> = (0..5)
            .map(|i| EvidenceValue::Json(answers[(combo / 3usize.pow(i)) % 3].clone()))
            .collect();
        let results = values
            .iter()
            .map(|v| decision_gate_core::EvidenceResult {
                value: Some(v.clone()),
                ..decision_gate_core::EvidenceResult::json(json!(null))
            })
            .collect();
        let recorded = plan.evaluate_stage(0, results, &config, &id("t"));
        let refs: Vec<Option<&EvidenceValue>> = values.iter().map(Some).collect();
        plan.gate_outcomes(0, &refs, config.logic_mode, &mut buffers);
        let expected: Vec<_> = recorded
            .gate_records
            .iter()
            .map(|r| r.evaluation.status)
            .collect();
        assert_eq!(buffers.outcomes, expected, "combination {combo}");
        let traced: usize = recorded
            .gate_records
            .iter()
            .map(|r| r.evaluation.trace.len())
            .sum();
        assert_eq!(buffers.trace.len(), traced);
    }
}

/// Entry-packet digests are computed once, when the plan is compiled, under the plan's
/// algorithm; they are the payloads' own digests, stage by stage and packet by packet, and a
/// different algorithm gets none (the caller hashes the payload itself).
#[test]
fn compiled_packet_digests_are_the_payloads_own() {
    let mut spec = spec(conditions());
    let packet = |id: &str, value: Value| {
        json!({"packet_id": id, "schema_id": "brief", "content_type": "application/json",
               "payload": {"kind": "json", "value": value}})
    };
    spec["stages"][0]["entry_packets"] = json!([
        packet("first", json!({"b": 2, "a": [1, "\u{e9}"]})),
        packet("second", json!("plain")),
    ]);
    spec["stages"][1]["entry_packets"] = json!([packet("third", json!({"stage": "two"}))]);
    let spec: decision_gate_core::ScenarioSpec = serde_json::from_value(spec).unwrap();
    for algorithm in [
        decision_gate_core::HashAlgorithm::Sha256,
        decision_gate_core::HashAlgorithm::Blake3,
    ] {
        let plan = decision_gate_core::engine::Plan::compile(spec.clone(), algorithm).unwrap();
        for (stage, stage_spec) in spec.stages.iter().enumerate() {
            let own: Vec<_> = stage_spec
                .entry_packets
                .iter()
                .map(|p| p.payload.content_hash(algorithm).unwrap())
                .collect();
            assert_eq!(plan.packet_hashes(stage, algorithm), Some(own.as_slice()));
        }
        let other = match algorithm {
            decision_gate_core::HashAlgorithm::Sha256 => decision_gate_core::HashAlgorithm::Blake3,
            decision_gate_core::HashAlgorithm::Blake3 => decision_gate_core::HashAlgorithm::Sha256,
        };
        assert_eq!(plan.packet_hashes(0, other), None);
    }
}
