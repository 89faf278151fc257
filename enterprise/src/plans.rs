//! Tenants' plans as the server applies them (ADR 0016): [`PlanCache`] remembers each tenant's
//! plan for at most a second and forgets every plan when the database announces a change, and
//! [`FeatureAuthorizer`] refuses a call over a transport its tenant's plan does not include.
//! Quotas are not read here: they are read and consumed in the transaction of the call that pays
//! (`decision_gate_store_enterprise`, migration 8).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use decision_gate_core::TenantId;
use decision_gate_core::access::{Action, Authorizer, AuthzError, RequestContext, Resource};
use decision_gate_store_enterprise::{Feature, PgError, PgPool, Plan, tenant_plan};
use lru::LruCache;

/// How long a plan read from the database is trusted without an announcement.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// Tenants whose plans are remembered.
const REMEMBERED: usize = 4096;

/// A tenant's plan: its id and contents, or `None` for a tenant on no plan.
pub type TenantPlan = Option<Arc<(String, Plan)>>;

/// Each tenant's plan, read through the application role's pool.
pub struct PlanCache {
    pool: PgPool,
    plans: Mutex<LruCache<TenantId, (Instant, u64, TenantPlan)>>,
    /// Bumped by [`Self::forget`]: a read that started before an announcement is not kept.
    generation: AtomicU64,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache").finish_non_exhaustive()
    }
}

impl PlanCache {
    /// An empty cache reading through `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            plans: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
            generation: AtomicU64::new(0),
        }
    }

    /// Forgets every plan (the database announced a change).
    pub fn forget(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut plans) = self.plans.lock() {
            plans.clear();
        }
    }

    /// `tenant`'s plan; `None` inside for a tenant on no plan or one that does not exist (its
    /// calls are refused elsewhere).
    ///
    /// # Errors
    /// A message when the database cannot be read.
    pub async fn plan(&self, tenant: TenantId) -> Result<TenantPlan, String> {
        let generation = self.generation.load(Ordering::SeqCst);
        let now = Instant::now();
        if let Ok(mut plans) = self.plans.lock()
            && let Some((read_at, seen, plan)) = plans.get(&tenant)
            && *seen == generation
            && now.duration_since(*read_at) < FRESH_FOR
        {
            return Ok(plan.clone());
        }
        let plan = match tenant_plan(&self.pool, tenant).await {
            Ok(plan) => plan.map(Arc::new),
            Err(PgError::MissingParent { .. }) => None,
            Err(e) => return Err(format!("reading the plan of tenant {tenant}: {e}")),
        };
        if let Ok(mut plans) = self.plans.lock()
            && self.generation.load(Ordering::SeqCst) == generation
        {
            plans.put(tenant, (now, generation, plan.clone()));
        }
        Ok(plan)
    }
}

/// The feature a call over `transport` needs, if any.
fn needed(transport: &str) -> Option<Feature> {
    (transport == "grpc").then_some(Feature::Grpc)
}

/// Refuses, after `inner` allowed a call, a call its tenant's plan does not cover: the gRPC API
/// when the plan leaves out `grpc`, with `permission_denied` and the reason. A tenant on no plan
/// has every feature. A call `inner` refuses is refused as `inner` says, so a caller outside
/// the tenant learns nothing of its plan.
pub struct FeatureAuthorizer {
    inner: Arc<dyn Authorizer>,
    plans: Arc<PlanCache>,
}

impl FeatureAuthorizer {
    /// `inner`, then the plan's features.
    #[must_use]
    pub fn new(inner: Arc<dyn Authorizer>, plans: Arc<PlanCache>) -> Self {
        Self { inner, plans }
    }
}

#[async_trait]
impl Authorizer for FeatureAuthorizer {
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: &Resource,
    ) -> Result<(), AuthzError> {
        self.inner.authorize(ctx, action, resource).await?;
        let Some(feature) = needed(ctx.transport) else {
            return Ok(());
        };
        let plan = self
            .plans
            .plan(ctx.tenant_id)
            .await
            .map_err(AuthzError::Unavailable)?;
        match plan.as_deref() {
            Some((id, plan)) if !plan.includes(feature) => Err(AuthzError::Denied(format!(
                "feature_disabled: the plan {id:?} of tenant {} does not include {}",
                ctx.tenant_id,
                feature.as_str()
            ))),
            _ => Ok(()),
        }
    }
}
