//! Bad input: every refusal names the JSON path (or field) and the rule or limit, and leaves the
//! store exactly as it was.

use std::sync::Arc;

use decision_gate_core::engine::{SpecError, parse_json};
use decision_gate_core::provider::{CheckContract, ProviderContract};
use decision_gate_core::run::{TriggerEvent, TriggerKind};
use decision_gate_core::service::SubmitRequest;
use decision_gate_core::spec::{PacketPayload, ScenarioSpec};
use decision_gate_core::store::PageRequest;
use decision_gate_core::{Comparator, DecisionGate, Error, Limits, Timestamp};
use serde_json::{Value, json};

use crate::support::*;

fn valid() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [{"gate_id": "g1", "requirement": {"And": [{"Condition": "ca"}, {"Condition": "cb"}]}}],
             "entry_packets": [{"packet_id": "p1", "schema_id": "x", "content_type": "text/plain", "payload": {"kind": "json", "value": "hi"}}],
             "advance_to": {"kind": "branch", "branches": [{"gate_id": "g1", "outcome": "true", "next_stage_id": "two"}], "default": "two"}},
            {"stage_id": "two", "gates": [{"gate_id": "g2", "requirement": {"Condition": "ca"}}], "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("ca", "a"), cond("cb", "b")]
    })
}

/// A gate whose facts provider only allows `equals` on check `strict`, with params `{n: integer}`.
fn gate_with_contracts() -> DecisionGate {
    struct Strict(ProviderContract);
    #[async_trait::async_trait]
    impl decision_gate_core::EvidenceProvider for Strict {
        fn contract(&self) -> &ProviderContract {
            &self.0
        }
        async fn query(
            &self,
            _: &decision_gate_core::evidence::EvidenceQuery,
            _: &decision_gate_core::evidence::EvidenceContext,
        ) -> Result<decision_gate_core::EvidenceResult, decision_gate_core::provider::ProviderError>
        {
            Ok(decision_gate_core::EvidenceResult::json(json!(1)))
        }
    }
    let strict = Strict(ProviderContract {
        provider_id: id("strict"),
        description: "contract test".into(),
        checks: vec![CheckContract {
            check_id: id("count"),
            description: "a count".into(),
            params_schema: json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false}),
            result_schema: json!({"type": "integer"}),
            allowed_comparators: vec![Comparator::Equals],
        }],
    });
    DecisionGate::builder()
        .provider(facts())
        .unwrap()
        .provider(Arc::new(strict))
        .unwrap()
        .config(decision_gate_core::EngineConfig {
            limits: Limits {
                max_payload_bytes: 64,
                max_spec_bytes: 64 * 1024,
                ..Limits::default()
            },
            ..Default::default()
        })
        .build()
}

/// Defines `spec` and returns the spec errors, checking that nothing was stored.
async fn refused(gate: &DecisionGate, spec: &Value) -> Vec<SpecError> {
    let err = gate
        .define_scenario_json(&ctx(), &spec.to_string())
        .await
        .expect_err("the spec must be refused");
    let listed = gate
        .list_scenarios(&ctx(), PageRequest::first(10))
        .await
        .unwrap();
    assert!(
        listed.items.is_empty(),
        "a refused spec leaves the store unchanged"
    );
    match err {
        Error::InvalidSpec(errors) => errors,
        other => panic!("expected InvalidSpec, got {other}"),
    }
}

fn mutate(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = valid();
    f(&mut v);
    v
}

async fn assert_refused_at(spec: Value, path: &str, rule_fragment: &str) {
    let gate = gate_with_contracts();
    let errors = refused(&gate, &spec).await;
    assert!(
        errors
            .iter()
            .any(|e| e.path == path && e.rule.contains(rule_fragment)),
        "expected an error at {path} containing {rule_fragment:?}, got {errors:?}"
    );
}

#[tokio::test]
async fn the_valid_spec_is_accepted_and_redefining_it_is_idempotent() {
    let gate = gate_with_contracts();
    let first = gate
        .define_scenario_json(&ctx(), &valid().to_string())
        .await
        .unwrap();
    assert!(first.created);
    let again = gate
        .define_scenario_json(&ctx(), &valid().to_string())
        .await
        .unwrap();
    assert_eq!((again.created, again.spec_hash), (false, first.spec_hash));
    let changed = mutate(|v| v["spec_version"] = json!("2"));
    let err = gate
        .define_scenario_json(&ctx(), &changed.to_string())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "already_exists");
}

#[tokio::test]
async fn malformed_json_unknown_fields_and_wrong_types_name_the_path() {
    let gate = gate_with_contracts();
    let errors = refused(&gate, &json!("not an object")).await;
    assert_eq!(errors[0].path, "$");
    let truncated = gate
        .define_scenario_json(&ctx(), r#"{"scenario_id": "s", "#)
        .await
        .unwrap_err();
    assert_eq!(truncated.kind(), "invalid_input", "{truncated}");

    let unknown = mutate(|v| v["stages"][1]["colour"] = json!("red"));
    assert_refused_at(unknown, "stages[1].colour", "unknown field").await;
    let unknown_deep = mutate(|v| v["conditions"][0]["query"]["extra"] = json!(1));
    assert_refused_at(unknown_deep, "conditions[0].query.extra", "unknown field").await;
    let wrong_type = mutate(|v| v["stages"][0]["gates"][0]["requirement"] = json!({"Maybe": []}));
    assert_refused_at(
        wrong_type,
        "stages[0].gates[0].requirement",
        "unknown variant",
    )
    .await;
    let zero_ns = mutate(|v| v["namespace_id"] = json!(0));
    assert_refused_at(zero_ns, "namespace_id", "at least 1").await;
    let bad_comparator = mutate(|v| v["conditions"][0]["comparator"] = json!("roughly"));
    assert_refused_at(
        bad_comparator,
        "conditions[0].comparator",
        "unknown variant",
    )
    .await;
}

#[tokio::test]
async fn ids_are_bounded() {
    let long = mutate(|v| v["stages"][0]["stage_id"] = json!("x".repeat(129)));
    assert_refused_at(long, "stages[0].stage_id", "limit is 128 bytes").await;
    let control = mutate(|v| v["conditions"][1]["condition_id"] = json!("c\u{0}b"));
    assert_refused_at(control, "conditions[1].condition_id", "control character").await;
}

#[tokio::test]
async fn duplicates_are_refused() {
    assert_refused_at(
        mutate(|v| v["stages"][1]["stage_id"] = json!("one")),
        "stages[1].stage_id",
        "duplicate stage",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][1]["gates"][0]["gate_id"] = json!("g1")),
        "stages[1].gates[0].gate_id",
        "duplicate gate",
    )
    .await;
    let dup_packet =
        mutate(|v| v["stages"][1]["entry_packets"] = v["stages"][0]["entry_packets"].clone());
    assert_refused_at(
        dup_packet,
        "stages[1].entry_packets[0].packet_id",
        "duplicate packet",
    )
    .await;
    let dup_cond = mutate(|v| v["conditions"][1]["condition_id"] = json!("ca"));
    assert_refused_at(
        dup_cond,
        "conditions[1].condition_id",
        "duplicate condition",
    )
    .await;
}

#[tokio::test]
async fn unknown_references_are_refused() {
    assert_refused_at(
        mutate(|v| v["stages"][1]["gates"][0]["requirement"] = json!({"Condition": "nope"})),
        "stages[1].gates[0].requirement.Condition",
        "unknown condition nope",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][0]["advance_to"]["branches"][0]["next_stage_id"] = json!("nowhere")),
        "stages[0].advance_to.branches[0].next_stage_id",
        "unknown stage",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][0]["advance_to"]["default"] = json!("nowhere")),
        "stages[0].advance_to.default",
        "unknown stage",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][0]["advance_to"] = json!({"kind": "fixed", "stage_id": "nowhere"})),
        "stages[0].advance_to.stage_id",
        "unknown stage",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][0]["advance_to"]["branches"][0]["gate_id"] = json!("g2")),
        "stages[0].advance_to.branches[0].gate_id",
        "not a gate of stage one",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["conditions"][0]["query"]["provider_id"] = json!("ghost")),
        "conditions[0].query.provider_id",
        "unknown provider",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["conditions"][0]["query"]["check_id"] = json!("zz")),
        "conditions[0].query.check_id",
        "has no check zz",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"] = json!([])),
        "stages",
        "at least one stage",
    )
    .await;
}

#[tokio::test]
async fn provider_contracts_are_enforced() {
    let strict = |params: Value, comparator: &str| {
        mutate(|v| {
            v["conditions"][1] = json!({"condition_id": "cb", "query": {"provider_id": "strict", "check_id": "count", "params": params},
                                       "comparator": comparator, "expected": 1});
        })
    };
    let gate = gate_with_contracts();
    gate.define_scenario_json(&ctx(), &strict(json!({"n": 3}), "equals").to_string())
        .await
        .expect("a spec within the contract");
    assert_refused_at(
        strict(json!({"n": "three"}), "equals"),
        "conditions[1].query.params",
        "params schema at '/n'",
    )
    .await;
    assert_refused_at(
        strict(json!({}), "equals"),
        "conditions[1].query.params",
        "params schema",
    )
    .await;
    assert_refused_at(
        strict(json!({"n": 3}), "greater_than"),
        "conditions[1].comparator",
        "does not allow comparator greater_than",
    )
    .await;
}

#[tokio::test]
async fn trees_and_groups_are_checked() {
    let mut deep = json!({"Condition": "ca"});
    for _ in 0..33 {
        deep = json!({"Not": deep});
    }
    let errors = refused(
        &gate_with_contracts(),
        &mutate(|v| v["stages"][1]["gates"][0]["requirement"] = deep.clone()),
    )
    .await;
    assert!(
        errors.iter().any(|e| e.rule.contains("deeper than 32")),
        "{errors:?}"
    );
    let mut ok = json!({"Condition": "ca"});
    for _ in 0..32 {
        ok = json!({"Not": ok});
    }
    gate_with_contracts()
        .define_scenario_json(
            &ctx(),
            &mutate(|v| v["stages"][1]["gates"][0]["requirement"] = ok).to_string(),
        )
        .await
        .expect("depth 32 is allowed");
    assert_refused_at(
        mutate(|v| {
            v["stages"][1]["gates"][0]["requirement"] =
                json!({"RequireGroup": {"min": 2, "reqs": [{"Condition": "ca"}]}})
        }),
        "stages[1].gates[0].requirement.RequireGroup.min",
        "min 2 is more than the 1",
    )
    .await;
}

#[tokio::test]
async fn expected_values_timeouts_payloads_and_scope_are_checked() {
    assert_refused_at(
        mutate(|v| v["conditions"][0]["expected"] = Value::Null),
        "conditions[0].expected",
        "expected is required",
    )
    .await;
    let lex = mutate(|v| {
        v["conditions"][0]["comparator"] = json!("lex_greater_than");
        v["conditions"][0]["expected"] = json!(3);
    });
    assert_refused_at(lex, "conditions[0].expected", "must be a string").await;
    let alt = mutate(|v| {
        v["stages"][1]["on_timeout"] = json!("alternate_branch");
        v["stages"][1]["timeout"] = json!({"timeout_ms": 5});
    });
    assert_refused_at(
        alt,
        "stages[1].on_timeout",
        "needs advance_to of kind branch",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][1]["timeout"] = json!({"timeout_ms": 0})),
        "stages[1].timeout.timeout_ms",
        "at least 1",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["stages"][1]["timeout"] = json!({"timeout_ms": u64::MAX})),
        "stages[1].timeout.timeout_ms",
        "at most",
    )
    .await;
    let big =
        mutate(|v| v["stages"][0]["entry_packets"][0]["payload"]["value"] = json!("y".repeat(100)));
    assert_refused_at(
        big,
        "stages[0].entry_packets[0].payload",
        "the limit is 64 bytes",
    )
    .await;
    assert_refused_at(
        mutate(|v| v["default_tenant_id"] = json!(9)),
        "default_tenant_id",
        "bound to tenant 9",
    )
    .await;

    let gate = gate_with_contracts();
    let other_ns = mutate(|v| v["namespace_id"] = json!(2));
    let err = gate
        .define_scenario_json(&ctx(), &other_ns.to_string())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "namespace_id"),
        "{err}"
    );
    let huge = format!("{{\"pad\": \"{}\"}}", "z".repeat(70 * 1024));
    let err = gate.define_scenario_json(&ctx(), &huge).await.unwrap_err();
    assert!(
        err.to_string().contains("the limit is 65536 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn every_error_is_reported_at_once() {
    let broken = mutate(|v| {
        v["stages"][1]["stage_id"] = json!("one");
        v["conditions"][0]["expected"] = Value::Null;
    });
    assert!(refused(&gate_with_contracts(), &broken).await.len() >= 2);
}

#[test]
fn parse_json_rejects_trailing_garbage() {
    let err: SpecError =
        parse_json::<ScenarioSpec>(&format!("{} x", valid()), 1 << 20).unwrap_err();
    assert_eq!(err.path, "$");
}

#[tokio::test]
async fn bad_triggers_and_submissions_change_nothing() {
    let facts = facts();
    let gate = builder(&facts)
        .config(decision_gate_core::EngineConfig {
            limits: Limits {
                max_payload_bytes: 32,
                ..Limits::default()
            },
            ..Default::default()
        })
        .build();
    define(&gate, &json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"Condition": "ca"}}], "advance_to": {"kind": "terminal"}}],
        "conditions": [cond("ca", "a")]
    }))
    .await;
    start(&gate, "s", "r").await;
    let before = journal(&gate, "s", "r").await;

    let big = PacketPayload::Json {
        value: json!("q".repeat(64)).into(),
    };
    let event = TriggerEvent {
        payload: Some(big.clone()),
        ..event("t", TriggerKind::ExternalEvent, Timestamp::Logical(1))
    };
    let err = gate
        .trigger(&ctx(), &id("s"), event.clone())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::TooLarge {
            field: "trigger.payload".into(),
            limit: 32,
            actual: 66
        }
    );
    let submit = SubmitRequest {
        scenario_id: id("s"),
        run_id: id("r"),
        submission_id: id("sub"),
        payload: big,
        content_type: "text/plain".into(),
        submitted_at: Timestamp::Logical(1),
    };
    assert_eq!(
        gate.submit(&ctx(), submit).await.unwrap_err().kind(),
        "too_large"
    );
    let foreign = TriggerEvent {
        tenant_id: decision_gate_core::TenantId::new(2).unwrap(),
        payload: None,
        ..event.clone()
    };
    assert_eq!(
        gate.trigger(&ctx(), &id("s"), foreign)
            .await
            .unwrap_err()
            .kind(),
        "invalid_input"
    );
    let no_run = TriggerEvent {
        run_id: id("ghost"),
        payload: None,
        ..event.clone()
    };
    assert_eq!(
        gate.trigger(&ctx(), &id("s"), no_run)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    let wrong_scenario = TriggerEvent {
        payload: None,
        ..event
    };
    assert_eq!(
        gate.trigger(&ctx(), &id("other"), wrong_scenario)
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
    assert_eq!(
        journal(&gate, "s", "r").await,
        before,
        "failed calls leave the run as it was"
    );
}

#[tokio::test]
async fn data_shapes_must_be_valid_2020_12_schemas_within_the_limit() {
    use decision_gate_core::store::DataShapeRecord;
    let gate = DecisionGate::builder()
        .config(decision_gate_core::EngineConfig {
            limits: Limits {
                max_schema_bytes: 200,
                ..Limits::default()
            },
            ..Default::default()
        })
        .build();
    let record = |schema: Value| DataShapeRecord {
        tenant_id: ctx().tenant_id,
        namespace_id: ctx().namespace_id,
        schema_id: id("shape"),
        version: id("v1"),
        schema,
        description: None,
        created_at: Timestamp::UnixMillis(0),
        signing: None,
    };
    let err = gate
        .register_schema(&ctx(), record(json!({"type": 12})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field, .. } if field == "record.schema"),
        "{err}"
    );
    let err = gate
        .register_schema(&ctx(), record(json!({"description": "d".repeat(300)})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 200, .. }), "{err}");
    assert!(
        gate.list_schemas(&ctx(), PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let ok = gate
        .register_schema(&ctx(), record(json!({"type": "object"})))
        .await
        .unwrap();
    assert_eq!(
        gate.get_schema(&ctx(), &id("shape"), &id("v1"))
            .await
            .unwrap(),
        ok
    );
    assert_eq!(
        gate.register_schema(&ctx(), ok).await.unwrap_err().kind(),
        "already_exists"
    );
}
