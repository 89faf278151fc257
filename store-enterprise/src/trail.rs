//! The enterprise trail in Postgres: the [`PgAuditSink`] and [`PgUsageMeter`] record the events
//! of calls that write nothing to the store (reads, failures, refusals), on the same tables
//! where store writes commit theirs, through the one SQL definition of those writes
//! (`dg_record_effects`, migration 4). Nothing of the trail lives on a replica's disk or in its
//! memory.
//!
//! An audit event naming a tenant and namespace that exist joins that tenant's trail; any other
//! (a refusal before authentication, a call naming a tenant that does not exist) joins the
//! deployment-level stream, which the application role may append to but not read.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use decision_gate_core::access::{
    AccessEvent, AuditError, AuditEvent, AuditSink, UsageError, UsageEvent, UsageMeter, UsageMetric,
};
use decision_gate_core::ids::TenantId;
use decision_gate_core::store::codec::encode;
use decision_gate_core::store::{Effects, StoreError};
use sqlx::PgPool;

use crate::codec::to_i64;

/// Usage and audit events as the column arrays `dg_record_effects` takes.
#[derive(Default)]
pub(crate) struct EffectColumns {
    pub(crate) usage_tenant: Vec<i64>,
    pub(crate) usage_key: Vec<String>,
    pub(crate) usage_namespace: Vec<i64>,
    pub(crate) usage_metric: Vec<String>,
    pub(crate) usage_quantity: Vec<i64>,
    pub(crate) audit_tenant: Vec<i64>,
    pub(crate) audit_namespace: Vec<i64>,
    pub(crate) audit_json: Vec<String>,
    pub(crate) audit_sha: Vec<String>,
}

impl EffectColumns {
    /// The columns of `usage` and `audit` events.
    pub(crate) fn of<'a>(
        usage: impl IntoIterator<Item = &'a UsageEvent>,
        audit: impl IntoIterator<Item = &'a AuditEvent>,
    ) -> Result<Self, StoreError> {
        let mut c = Self::default();
        // By counter name: `dg_record_effects` counts each counter's run of events at once,
        // and every transaction takes counters in one order.
        let mut usage: Vec<&UsageEvent> = usage.into_iter().collect();
        usage.sort_by_key(|e| e.metric.as_str());
        for e in usage {
            c.usage_tenant.push(e.tenant_id.as_i64());
            c.usage_key.push(e.idempotency_key.clone());
            c.usage_namespace.push(e.namespace_id.as_i64());
            c.usage_metric.push(e.metric.as_str().to_owned());
            c.usage_quantity.push(to_i64("quantity", e.quantity)?);
        }
        for e in audit {
            let (json, sha) = encode(e)?;
            c.audit_tenant.push(e.tenant_id.as_i64());
            c.audit_namespace.push(e.namespace_id.as_i64());
            c.audit_json.push(json);
            c.audit_sha.push(sha);
        }
        Ok(c)
    }

    /// The columns of a store write's effects.
    pub(crate) fn of_effects(effects: &Effects) -> Result<Self, StoreError> {
        Self::of(&effects.usage, &effects.audit)
    }

    /// Whether there is nothing to record.
    pub(crate) fn is_empty(&self) -> bool {
        self.usage_key.is_empty() && self.audit_json.is_empty()
    }

    /// Records the events in `tenant`'s scope, inside `executor`'s transaction (or as one
    /// statement, its own transaction).
    pub(crate) async fn record<'e>(
        self,
        executor: impl sqlx::PgExecutor<'e>,
        tenant: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT dg_record_effects($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(tenant)
            .bind(self.usage_tenant)
            .bind(self.usage_key)
            .bind(self.usage_namespace)
            .bind(self.usage_metric)
            .bind(self.usage_quantity)
            .bind(self.audit_tenant)
            .bind(self.audit_namespace)
            .bind(self.audit_json)
            .bind(self.audit_sha)
            .execute(executor)
            .await
            .map(drop)
    }
}

/// Events grouped by their tenant, so each group is recorded in its tenant's scope.
fn by_tenant<T>(events: &[T], tenant: impl Fn(&T) -> TenantId) -> BTreeMap<TenantId, Vec<&T>> {
    let mut groups: BTreeMap<TenantId, Vec<&T>> = BTreeMap::new();
    for e in events {
        groups.entry(tenant(e)).or_default().push(e);
    }
    groups
}

/// The audit sink of the enterprise server: every event in Postgres.
#[derive(Clone, Debug)]
pub struct PgAuditSink {
    pool: PgPool,
}

impl PgAuditSink {
    /// A sink writing through `pool` (the application role's).
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl AuditSink for PgAuditSink {
    async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        // A call's events share its tenant: one statement each, in order.
        for (tenant, group) in by_tenant(events, |e| e.tenant_id) {
            EffectColumns::of([], group)
                .map_err(|e| AuditError(e.to_string()))?
                .record(&self.pool, tenant.as_i64())
                .await
                .map_err(|e| AuditError(format!("recording audit events: {e}")))?;
        }
        Ok(())
    }

    async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
        let (json, sha) = encode(event).map_err(|e| AuditError(e.to_string()))?;
        sqlx::query("SELECT dg_record_deployment_events($1, $2)")
            .bind(vec![json])
            .bind(vec![sha])
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| AuditError(format!("recording a deployment event: {e}")))
    }
}

/// How long a tenant's quota snapshot answers the pre-check before it is read again.
const SNAPSHOT_FRESH_FOR: Duration = Duration::from_millis(250);
/// Tenants whose snapshots are kept.
const SNAPSHOTS: usize = 4096;

/// A tenant's limited counters as last read: (metric, limit, used) per limited period.
struct Snapshot {
    read_at: Instant,
    limited: Vec<(UsageMetric, u64, u64)>,
}

/// The usage meter of the enterprise server: every event in the ledger, keyed by its
/// idempotency key, so a retried call is counted once. Quotas (migration 8) are checked and
/// consumed where the events are recorded, in the same transaction: a store write's own, or
/// the one [`UsageMeter::record`] opens for a call that writes nothing.
///
/// `check`, the pre-check before a call runs, answers from a snapshot of the tenant's limited
/// counters read at most every 250 ms (and again after this meter records for the tenant, or
/// after [`Self::forget`]); only when the snapshot says a call would pass a limit does it ask
/// the database, which also leaves out the keys already counted (a retried call). A call the
/// snapshot let through is still refused by its transaction if other calls filled the quota.
#[derive(Clone)]
pub struct PgUsageMeter {
    pool: PgPool,
    snapshots: Arc<Mutex<HashMap<TenantId, Snapshot>>>,
}

impl std::fmt::Debug for PgUsageMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgUsageMeter").finish_non_exhaustive()
    }
}

impl PgUsageMeter {
    /// A meter writing through `pool` (the application role's).
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            snapshots: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Forgets every snapshot (plans or overrides changed).
    pub fn forget(&self) {
        if let Ok(mut s) = self.snapshots.lock() {
            s.clear();
        }
    }

    fn forget_tenant(&self, tenant: TenantId) {
        if let Ok(mut s) = self.snapshots.lock() {
            s.remove(&tenant);
        }
    }

    /// The tenant's limited counters, from a fresh snapshot or the database.
    async fn limited(&self, tenant: TenantId) -> Result<Vec<(UsageMetric, u64, u64)>, UsageError> {
        if let Ok(s) = self.snapshots.lock()
            && let Some(snapshot) = s.get(&tenant)
            && snapshot.read_at.elapsed() < SNAPSHOT_FRESH_FOR
        {
            return Ok(snapshot.limited.clone());
        }
        let read_at = Instant::now();
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT metric, quota_limit, used FROM dg_usage($1) WHERE quota_limit IS NOT NULL",
        )
        .bind(tenant.as_i64())
        .fetch_all(&self.pool)
        .await
        .map_err(usage_error)?;
        let limited: Vec<_> = rows
            .into_iter()
            .filter_map(|(metric, limit, used)| {
                Some((
                    UsageMetric::parse(&metric)?,
                    limit.unsigned_abs(),
                    used.unsigned_abs(),
                ))
            })
            .collect();
        if let Ok(mut s) = self.snapshots.lock() {
            if s.len() >= SNAPSHOTS {
                s.clear();
            }
            s.insert(
                tenant,
                Snapshot {
                    read_at,
                    limited: limited.clone(),
                },
            );
        }
        Ok(limited)
    }

    /// The database's pre-check of `events`: the refusal of the first quota they would pass,
    /// leaving out keys already counted.
    async fn confirm(&self, tenant: TenantId, events: &[&UsageEvent]) -> Result<(), UsageError> {
        let columns = EffectColumns::of(events.iter().copied(), [])
            .map_err(|e| UsageError::Unavailable(e.to_string()))?;
        let (refusal,): (Option<String>,) = sqlx::query_as("SELECT dg_quota_check($1, $2, $3, $4)")
            .bind(tenant.as_i64())
            .bind(columns.usage_key)
            .bind(columns.usage_metric)
            .bind(columns.usage_quantity)
            .fetch_one(&self.pool)
            .await
            .map_err(usage_error)?;
        match refusal {
            None => Ok(()),
            Some(json) => Err(UsageError::QuotaExceeded(
                serde_json::from_str(&json).map_err(|e| {
                    UsageError::Unavailable(format!("an unreadable quota refusal: {e}"))
                })?,
            )),
        }
    }
}

/// A database error of the meter: a quota's refusal, else `Unavailable`.
fn usage_error(e: sqlx::Error) -> UsageError {
    match crate::codec::quota_refusal(&e) {
        Some(refusal) => UsageError::QuotaExceeded(refusal),
        None => UsageError::Unavailable(format!("the usage ledger: {e}")),
    }
}

#[async_trait]
impl UsageMeter for PgUsageMeter {
    async fn check(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        for (tenant, group) in by_tenant(events, |e| e.tenant_id) {
            let limited = self.limited(tenant).await?;
            let over = limited.iter().any(|(metric, limit, used)| {
                let wanted: u64 = group
                    .iter()
                    .filter(|e| e.metric == *metric)
                    .map(|e| e.quantity)
                    .sum();
                wanted > 0 && used.saturating_add(wanted) > *limit
            });
            if over {
                self.confirm(tenant, &group).await?;
            }
        }
        Ok(())
    }

    async fn record(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        // One transaction for every tenant's events: a quota's refusal records none of them.
        let groups = by_tenant(events, |e| e.tenant_id);
        let recorded = async {
            let mut tx = self.pool.begin().await.map_err(usage_error)?;
            for (tenant, group) in &groups {
                EffectColumns::of(group.iter().copied(), [])
                    .map_err(|e| UsageError::Unavailable(e.to_string()))?
                    .record(&mut *tx, tenant.as_i64())
                    .await
                    .map_err(usage_error)?;
            }
            tx.commit().await.map_err(usage_error)
        }
        .await;
        for tenant in groups.keys() {
            self.forget_tenant(*tenant);
        }
        recorded
    }
}

/// Records an administrative event (a change or a refusal of the admin API) in the deployment
/// stream, the control plane's trail, naming the tenant and namespace it concerns.
///
/// # Errors
/// [`StoreError`] when the event cannot be encoded or the database refuses it.
pub async fn record_admin_event<T: serde::Serialize>(
    pool: &PgPool,
    tenant: Option<TenantId>,
    namespace: Option<decision_gate_core::ids::NamespaceId>,
    event: &T,
) -> Result<(), StoreError> {
    let (json, sha) = encode(event)?;
    sqlx::query(
        "INSERT INTO deployment_audit_events (named_tenant, named_namespace, event_json, doc_sha256)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant.map(TenantId::as_i64))
    .bind(namespace.map(decision_gate_core::ids::NamespaceId::as_i64))
    .bind(json)
    .bind(sha)
    .execute(pool)
    .await
    .map(drop)
    .map_err(|e| StoreError::Unavailable(e.to_string()))
}
