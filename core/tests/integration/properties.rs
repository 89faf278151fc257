//! Random valid and invalid specs and triggers: nothing panics, a refused call changes nothing,
//! and an accepted trigger appends at most one entry.

use decision_gate_core::run::{TriggerEvent, TriggerKind};
use decision_gate_core::spec::PacketPayload;
use decision_gate_core::store::PageRequest;
use decision_gate_core::{EngineConfig, Limits, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::*;

const CONDITIONS: [&str; 4] = ["c0", "c1", "c2", "c3"];

fn pick<T: Clone + std::fmt::Debug + 'static>(items: &'static [T]) -> impl Strategy<Value = T> {
    prop::sample::select(items)
}

fn requirement() -> impl Strategy<Value = Value> {
    let leaf = pick(&CONDITIONS).prop_map(|c| json!({"Condition": c}));
    leaf.prop_recursive(6, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"And": v})),
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"Or": v})),
            inner.clone().prop_map(|v| json!({"Not": v})),
            prop::collection::vec(inner, 0..4).prop_flat_map(|reqs| {
                let len = reqs.len() as u8;
                (0..=len).prop_map(
                    move |min| json!({"RequireGroup": {"min": min, "reqs": reqs.clone()}}),
                )
            }),
        ]
    })
}

/// One stage of `count`, valid by construction.
fn stage(index: usize, count: usize) -> impl Strategy<Value = Value> {
    let id = format!("s{index}");
    (prop::collection::vec(requirement(), 0..3), 0..4usize, 0..count, prop::option::of(1u64..4), any::<bool>(), pick(&["true", "false", "unknown"][..]))
        .prop_map(move |(reqs, advance, target, timeout, packet, outcome)| {
            let gates: Vec<Value> = reqs.iter().enumerate().map(|(i, r)| json!({"gate_id": format!("g-{id}-{i}"), "requirement": r})).collect();
            let target = format!("s{target}");
            let (advance_to, policy) = match (advance, gates.is_empty()) {
                (0, _) => (json!({"kind": "linear"}), "fail"),
                (1, _) => (json!({"kind": "terminal"}), "advance_with_flag"),
                (2, _) | (3, true) => (json!({"kind": "fixed", "stage_id": target}), "fail"),
                _ => (
                    json!({"kind": "branch", "branches": [{"gate_id": format!("g-{id}-0"), "outcome": outcome, "next_stage_id": target}], "default": target}),
                    "alternate_branch",
                ),
            };
            let packets: Vec<Value> = packet
                .then(|| json!({"packet_id": format!("p-{id}"), "schema_id": "x", "content_type": "application/json", "payload": {"kind": "json", "value": id}}))
                .into_iter()
                .collect();
            json!({"stage_id": id, "gates": gates, "advance_to": advance_to, "entry_packets": packets,
                   "timeout": timeout.map(|t| json!({"timeout_ms": t})), "on_timeout": policy})
        })
}

/// A valid spec of one to three stages (`s0`.., packets `p-s0`..), scenario `p`.
pub(crate) fn valid_spec() -> impl Strategy<Value = Value> {
    (1..4usize).prop_flat_map(|count| {
        let stages: Vec<_> = (0..count).map(|i| stage(i, count)).collect();
        let conditions = prop::collection::vec((pick(&["a", "b"][..]), pick(&["equals", "exists", "not_equals"][..])), 4);
        (stages, conditions).prop_map(|(stages, conditions)| {
            let conditions: Vec<Value> = conditions
                .into_iter()
                .enumerate()
                .map(|(i, (check, comparator))| {
                    json!({"condition_id": CONDITIONS[i], "query": {"provider_id": "facts", "check_id": check}, "comparator": comparator, "expected": true})
                })
                .collect();
            json!({"scenario_id": "p", "namespace_id": 1, "spec_version": "1", "stages": stages, "conditions": conditions})
        })
    })
}

/// A valid spec, or one broken in one random way.
fn spec() -> impl Strategy<Value = Value> {
    (valid_spec(), prop::option::weighted(0.35, 0..7u8)).prop_map(|(mut spec, breakage)| {
        match breakage {
            None => {}
            Some(0) => spec["unexpected"] = json!(1),
            Some(1) => spec["stages"][0]["stage_id"] = json!("x\n"),
            Some(2) => spec["conditions"][0]["query"]["check_id"] = json!("nope"),
            Some(3) => spec["conditions"][1]["comparator"] = json!("in_set"),
            Some(4) => {
                spec["stages"][0]["gates"] =
                    json!([{"gate_id": "g", "requirement": {"Condition": "ghost"}}])
            }
            Some(5) => {
                spec["stages"][0]["advance_to"] = json!({"kind": "fixed", "stage_id": "nowhere"})
            }
            Some(_) => spec["conditions"][2]["condition_id"] = json!("c0"),
        }
        spec
    })
}

#[derive(Clone, Debug)]
struct Trigger {
    id: u8,
    kind: TriggerKind,
    time: Timestamp,
    big_payload: bool,
    evidence: Option<Value>,
}

fn trigger() -> impl Strategy<Value = Trigger> {
    (
        0u8..6,
        pick(&[TriggerKind::AgentRequestNext, TriggerKind::Tick, TriggerKind::ExternalEvent, TriggerKind::BackendEvent][..]),
        prop_oneof![9 => (0u64..20).prop_map(Timestamp::Logical), 1 => (0i64..20).prop_map(Timestamp::UnixMillis)],
        prop::bool::weighted(0.1),
        prop::option::of(prop_oneof![Just(json!(true)), Just(json!(false)), Just(json!(2)), Just(json!("x"))]),
    )
        .prop_map(|(id, kind, time, big_payload, evidence)| Trigger { id, kind, time, big_payload, evidence })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn random_specs_and_triggers_never_panic_and_failures_change_nothing(
        spec in spec(),
        triggers in prop::collection::vec(trigger(), 0..10),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let facts = facts();
            let config = EngineConfig { limits: Limits { max_payload_bytes: 64, ..Limits::default() }, ..EngineConfig::default() };
            let gate = service_with(&facts, config);
            let defined = gate.define_scenario_json(&ctx(), &spec.to_string()).await;
            let listed = gate.list_scenarios(&ctx(), PageRequest::first(10)).await.unwrap().items.len();
            if defined.is_err() {
                assert_eq!(listed, 0, "a refused spec stores nothing");
                return;
            }
            assert_eq!(listed, 1);
            start(&gate, "p", "r").await;
            for t in triggers {
                if let Some(v) = &t.evidence {
                    set(&facts, "a", v.clone());
                }
                let before = journal(&gate, "p", "r").await;
                let payload = t.big_payload.then(|| PacketPayload::Json { value: json!("z".repeat(100)).into() });
                let event = TriggerEvent { payload, ..event(&format!("t{}", t.id), t.kind, t.time) };
                let result = gate.trigger(&ctx(), &id("p"), event).await;
                let after = journal(&gate, "p", "r").await;
                match result {
                    Err(_) => assert_eq!(after, before, "a failed trigger changes nothing"),
                    Ok(_) => {
                        assert!(after.len() == before.len() || after.len() == before.len() + 1, "at most one entry per trigger");
                        assert_eq!(&after[..before.len()], &before[..], "history is never rewritten");
                    }
                }
            }
        });
    }
}
