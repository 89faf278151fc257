//! The start-up gate: open, it is the store it wraps and passes the storage suites; closed, it
//! refuses every call `unavailable` with its reason and touches nothing behind it.

use std::sync::Arc;

use decision_gate_core::MemoryStore;
use decision_gate_core::conformance::{run_key, scenario};
use decision_gate_core::store::{Effects, RunStore, ScenarioStore, StoreError};
use decision_gate_enterprise::GatedStore;

async fn fresh() -> Arc<GatedStore<MemoryStore>> {
    let gate = GatedStore::closed(MemoryStore::default(), "not checked yet");
    gate.open();
    Arc::new(gate)
}

decision_gate_core::scenario_store_conformance!(fresh);
decision_gate_core::run_store_conformance!(fresh);
decision_gate_core::schema_registry_conformance!(fresh);

/// The gate passes on whether the store behind it owns its effects: here it does not.
async fn effects_fixture()
-> decision_gate_core::conformance::EffectsFixture<GatedStore<MemoryStore>> {
    decision_gate_core::conformance::EffectsFixture {
        store: fresh().await,
        ledger: None,
    }
}

decision_gate_core::effects_conformance!(effects_fixture);

#[tokio::test]
async fn a_closed_gate_refuses_every_call_with_its_reason_and_writes_nothing() {
    let gate = GatedStore::closed(MemoryStore::default(), "the database is unreachable");
    let record = scenario("s", 1, "1");
    let refused = ScenarioStore::put(&gate, &record, &Effects::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("the database is unreachable")),
        "{refused:?}"
    );
    assert!(matches!(
        gate.head(&run_key(1, 1, "r")).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        gate.ready().await,
        Err(StoreError::Unavailable(_))
    ));
    // Nothing reached the store behind the gate.
    gate.open();
    let stored = ScenarioStore::get(
        &gate,
        record.tenant_id,
        record.spec.namespace_id,
        &record.spec.scenario_id,
    )
    .await
    .unwrap();
    assert_eq!(stored, None);
}
