//! [`TenancyAuthorizer`]: the state of the organisation, tenant and namespace a call acts in, on
//! top of any authorizer. A deleted (or missing) one is `not_found`; a suspended one is
//! `permission_denied` with the reason `organisation_suspended`, `tenant_suspended` or
//! `namespace_suspended`. States
//! are read from Postgres and remembered for at most one second, so a change takes effect on
//! every replica within a second.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use decision_gate_core::access::{Action, Authorizer, AuthzError, RequestContext, Resource};
use decision_gate_core::{NamespaceId, TenantId};
use decision_gate_store_enterprise::{LifecycleState, PgPool, namespace_state};
use lru::LruCache;

/// How long a state read from the database is trusted.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// (tenant, namespace) states remembered.
const REMEMBERED: usize = 4096;

/// What a call may find in a tenant and namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standing {
    Serving,
    Missing,
    OrganisationSuspended,
    TenantSuspended,
    NamespaceSuspended,
}

/// Refuses calls into tenants and namespaces that are suspended, deleted or missing, after the
/// inner authorizer allowed them (or denied a permission): a caller outside the tenant's scope
/// learns nothing about its state.
pub struct TenancyAuthorizer {
    inner: Arc<dyn Authorizer>,
    pool: PgPool,
    states: Mutex<LruCache<(TenantId, NamespaceId), (Instant, Standing)>>,
}

impl std::fmt::Debug for TenancyAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyAuthorizer").finish_non_exhaustive()
    }
}

impl TenancyAuthorizer {
    /// `inner`, with tenant and namespace states read through `pool`.
    #[must_use]
    pub fn new(inner: Arc<dyn Authorizer>, pool: PgPool) -> Self {
        Self {
            inner,
            pool,
            states: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Forgets every state read, so the next call reads them again (the database announced a
    /// change).
    pub fn forget(&self) {
        if let Ok(mut states) = self.states.lock() {
            states.clear();
        }
    }

    async fn standing(
        &self,
        tenant: TenantId,
        namespace: NamespaceId,
    ) -> Result<Standing, AuthzError> {
        let now = Instant::now();
        if let Ok(mut states) = self.states.lock()
            && let Some(&(read_at, standing)) = states.get(&(tenant, namespace))
            && now.duration_since(read_at) < FRESH_FOR
        {
            return Ok(standing);
        }
        let state = namespace_state(&self.pool, tenant, namespace)
            .await
            .map_err(|e| AuthzError::Unavailable(format!("reading the tenant's state: {e}")))?;
        let standing = match state.map(|s| (s.organisation, s.tenant, s.namespace)) {
            None
            | Some(
                (LifecycleState::Deleted, ..)
                | (_, LifecycleState::Deleted, _)
                | (_, _, None | Some(LifecycleState::Deleted)),
            ) => Standing::Missing,
            Some((LifecycleState::Suspended, ..)) => Standing::OrganisationSuspended,
            Some((_, LifecycleState::Suspended, _)) => Standing::TenantSuspended,
            Some((_, _, Some(LifecycleState::Suspended))) => Standing::NamespaceSuspended,
            Some((
                LifecycleState::Active,
                LifecycleState::Active,
                Some(LifecycleState::Active),
            )) => Standing::Serving,
        };
        if let Ok(mut states) = self.states.lock() {
            states.put((tenant, namespace), (now, standing));
        }
        Ok(standing)
    }
}

#[async_trait]
impl Authorizer for TenancyAuthorizer {
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: &Resource,
    ) -> Result<(), AuthzError> {
        let verdict = self.inner.authorize(ctx, action, resource).await;
        if matches!(
            verdict,
            Err(AuthzError::OutOfScope | AuthzError::Unavailable(_))
        ) {
            return verdict;
        }
        match self.standing(ctx.tenant_id, ctx.namespace_id).await? {
            Standing::Serving => verdict,
            Standing::Missing => Err(AuthzError::OutOfScope),
            Standing::OrganisationSuspended => Err(AuthzError::Denied(format!(
                "organisation_suspended: the organisation of tenant {} is suspended",
                ctx.tenant_id
            ))),
            Standing::TenantSuspended => Err(AuthzError::Denied(format!(
                "tenant_suspended: tenant {} is suspended",
                ctx.tenant_id
            ))),
            Standing::NamespaceSuspended => Err(AuthzError::Denied(format!(
                "namespace_suspended: namespace {} of tenant {} is suspended",
                ctx.namespace_id, ctx.tenant_id
            ))),
        }
    }
}
