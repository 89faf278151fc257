//! The core's storage conformance suites on `PgStore`: every case in its own database (the
//! cases use fixed tenant ids), connected as the application role under row-level security.

use std::sync::Arc;

use decision_gate_store_enterprise::PgStore;

use crate::support::ScratchDb;

async fn fresh() -> Arc<PgStore> {
    Arc::new(ScratchDb::migrated().await.app_store().await)
}

decision_gate_core::scenario_store_conformance!(fresh);
decision_gate_core::run_store_conformance!(fresh);
decision_gate_core::schema_registry_conformance!(fresh);
