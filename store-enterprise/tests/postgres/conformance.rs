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

// ---- the access seams and a write's effects --------------------------------------------------

use async_trait::async_trait;
use decision_gate_core::access::{
    AccessEvent, AuditEvent, AuditRecord, QuotaPeriod, UsageEvent, UsageMetric,
};
use decision_gate_core::conformance::{
    AuditFixture, AuditProbe, EffectsFixture, EffectsProbe, Quota, UsageFixture, UsageProbe,
};
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_core::store::Effects;
use decision_gate_store_enterprise::{
    PgAuditSink, PgPool, PgUsageMeter, Plan, QuotaLimit, assign_plan, put_plan,
};

/// Reads the trail past row-level security, as an operator would: the owner's pool.
struct Trail(PgPool);

impl Trail {
    async fn usage(&self, tenant: TenantId) -> Vec<UsageEvent> {
        let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
            "SELECT namespace_id, metric, quantity, idempotency_key FROM usage_events
              WHERE tenant_id = $1",
        )
        .bind(tenant.as_i64())
        .fetch_all(&self.0)
        .await
        .expect("read usage_events");
        rows.into_iter()
            .map(|(ns, metric, quantity, key)| UsageEvent {
                tenant_id: tenant,
                namespace_id: NamespaceId::new(ns.unsigned_abs()).expect("namespace"),
                metric: serde_json::from_value(serde_json::Value::String(metric))
                    .expect("a metric name"),
                quantity: quantity.unsigned_abs(),
                idempotency_key: key,
            })
            .collect()
    }

    async fn calls(&self, tenant: Option<TenantId>) -> Vec<AuditEvent> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT event_json FROM audit_events
              WHERE $1::bigint IS NULL OR tenant_id = $1 ORDER BY event_id",
        )
        .bind(tenant.map(TenantId::as_i64))
        .fetch_all(&self.0)
        .await
        .expect("read audit_events");
        rows.iter()
            .map(|(json,)| serde_json::from_str(json).expect("an audit event"))
            .collect()
    }
}

#[async_trait]
impl EffectsProbe for Trail {
    async fn committed(&self, tenant_id: TenantId) -> Effects {
        Effects {
            usage: self.usage(tenant_id).await,
            audit: self.calls(Some(tenant_id)).await,
        }
    }
}

#[async_trait]
impl UsageProbe for Trail {
    async fn total(&self, tenant_id: TenantId, metric: UsageMetric) -> u64 {
        self.usage(tenant_id)
            .await
            .iter()
            .filter(|u| u.metric == metric)
            .map(|u| u.quantity)
            .sum()
    }
}

#[async_trait]
impl AuditProbe for Trail {
    async fn records(&self) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = self
            .calls(None)
            .await
            .into_iter()
            .map(AuditRecord::Call)
            .collect();
        let access: Vec<(String,)> =
            sqlx::query_as("SELECT event_json FROM deployment_audit_events ORDER BY event_id")
                .fetch_all(&self.0)
                .await
                .expect("read deployment_audit_events");
        records.extend(access.iter().map(|(json,)| {
            AuditRecord::Access(serde_json::from_str::<AccessEvent>(json).expect("an access event"))
        }));
        records
    }
}

async fn effects_fixture() -> EffectsFixture<PgStore> {
    let db = ScratchDb::migrated().await;
    EffectsFixture {
        store: Arc::new(db.app_store().await),
        ledger: Some(Arc::new(Trail(db.owner_pool().await))),
    }
}

async fn audit_fixture() -> AuditFixture {
    let db = ScratchDb::migrated().await;
    let app = db.app_store().await.pool().clone();
    AuditFixture {
        sink: Arc::new(PgAuditSink::new(app)),
        probe: Arc::new(Trail(db.owner_pool().await)),
    }
}

async fn usage_fixture() -> UsageFixture {
    let db = ScratchDb::migrated().await;
    let app = db.app_store().await.pool().clone();
    let owner = db.owner_pool().await;
    // Tenant 3 is on a plan with a quota the suite fills; tenants 1 and 2 on none.
    let plan = Plan {
        quotas: vec![QuotaLimit {
            metric: UsageMetric::ToolCalls,
            period: QuotaPeriod::Day,
            limit: 20,
        }],
        ..Plan::default()
    };
    put_plan(&owner, "conformance", &plan).await.expect("plan");
    assign_plan(&owner, TenantId::new(3).unwrap(), Some("conformance"))
        .await
        .expect("assign the plan");
    // A meter whose ledger is unreachable: nothing listens on port 1.
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(std::time::Duration::from_secs(2))
        .connect_lazy("postgres://dg@127.0.0.1:1/none")
        .expect("a lazy pool");
    UsageFixture {
        meter: Arc::new(PgUsageMeter::new(app)),
        probe: Arc::new(Trail(owner)),
        quota: Some(Quota {
            tenant_id: TenantId::new(3).unwrap(),
            namespace_id: NamespaceId::new(1).unwrap(),
            metric: UsageMetric::ToolCalls,
            limit: 20,
        }),
        undecidable: Some(Arc::new(PgUsageMeter::new(unreachable))),
    }
}

decision_gate_core::effects_conformance!(effects_fixture);
decision_gate_core::audit_sink_conformance!(audit_fixture);
decision_gate_core::usage_meter_conformance!(usage_fixture);
