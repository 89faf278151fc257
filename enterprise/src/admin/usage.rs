//! A tenant's usage: its plan, each quota with what its current period has used and when it
//! resets, and every counter for the current day, month and in all.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use decision_gate_store_enterprise::{tenant_plan, tenant_usage};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Admin, Caller, Problem, ProblemBody, tenant_id};
use crate::rbac::AdminAction;

pub(super) fn routes() -> Router<Admin> {
    Router::new().route("/admin/v1/tenants/{tenant_id}/usage", get(get_usage))
}

/// One quota and its current period.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct QuotaView {
    /// The counter (`tool_calls`, `runs_started`, `evidence_queries`, `runpack_exports`,
    /// `schemas_written`, `storage_bytes`, `registry_entries`).
    metric: String,
    /// `day`, `month` or `total` (UTC calendar periods).
    period: String,
    /// The limit (the tenant's override, else its plan's).
    limit: u64,
    /// What the current period has used.
    used: u64,
    /// When the period resets (unix milliseconds); absent for a total.
    reset_at_ms: Option<u64>,
}

/// A tenant's usage.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UsageView {
    /// The tenant.
    tenant_id: u64,
    /// Its plan, if it is on one (none: no quotas, every feature).
    plan: Option<String>,
    /// The features its plan includes (every feature without a plan).
    features: Vec<String>,
    /// Its quotas with what each has used.
    quotas: Vec<QuotaView>,
    /// Every counter: counter → `day`, `month`, `total` → what the current period used.
    counters: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Read a tenant's usage and quotas.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/usage", tag = "usage",
    params(("tenant_id" = u64, Path, description = "The tenant")),
    responses((status = 200, body = UsageView), (status = 403, body = ProblemBody),
        (status = 404, body = ProblemBody)))]
pub(super) async fn get_usage(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
) -> Result<Json<UsageView>, Problem> {
    let tenant = tenant_id(tenant)?;
    let (target, _) = admin.tenant_standing(tenant, None).await?;
    admin
        .authorize(&caller, target, AdminAction::UsageRead)
        .await?;
    let plan = tenant_plan(admin.pool(), tenant).await?;
    let features = match &plan {
        Some((_, plan)) => plan
            .features
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
        None => decision_gate_store_enterprise::Feature::ALL
            .iter()
            .map(|f| f.as_str().to_owned())
            .collect(),
    };
    let counters_read = tenant_usage(admin.pool(), tenant).await?;
    let quotas = counters_read
        .iter()
        .filter_map(|c| {
            Some(QuotaView {
                metric: c.metric.as_str().to_owned(),
                period: c.period.as_str().to_owned(),
                limit: c.limit?,
                used: c.used,
                reset_at_ms: c.reset_at_ms,
            })
        })
        .collect();
    let mut counters: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for c in &counters_read {
        counters
            .entry(c.metric.as_str().to_owned())
            .or_default()
            .insert(c.period.as_str().to_owned(), c.used);
    }
    Ok(Json(UsageView {
        tenant_id: tenant.get(),
        plan: plan.map(|(id, _)| id),
        features,
        quotas,
        counters,
    }))
}
