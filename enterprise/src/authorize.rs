//! [`RoleAuthorizer`]: role-based authorization of every tool call, by the bindings a
//! principal carries (API keys, identity-provider principals), against the permission matrix
//! of [`crate::rbac`]. The bearer tokens and mTLS clients of the configuration file, each with
//! its own scope and tool list, keep the open-source scope rules; every other principal is
//! authorized by its bindings alone, so one without any reaches nothing.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use decision_gate_core::TenantId;
use decision_gate_core::access::{Action, Authorizer, AuthzError, RequestContext, Resource};
use decision_gate_core::identity::AuthMethod;
use decision_gate_store_enterprise::{PgPool, namespace_state};
use lru::LruCache;

use crate::rbac::{Binding, Verdict, decide_tool};

/// Tenants whose organisation is remembered (a tenant never changes organisation).
const REMEMBERED: usize = 16_384;

/// Authorizes API-key and identity-provider principals by their bindings and the permission
/// matrix, and the configuration file's principals by `scoped` (the open-source scope rules).
pub struct RoleAuthorizer {
    scoped: Arc<dyn Authorizer>,
    pool: PgPool,
    organisations: Mutex<LruCache<TenantId, i64>>,
}

impl std::fmt::Debug for RoleAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoleAuthorizer").finish_non_exhaustive()
    }
}

impl RoleAuthorizer {
    /// Tenants' organisations read through `pool`; principals without bindings go to `scoped`.
    #[must_use]
    pub fn new(scoped: Arc<dyn Authorizer>, pool: PgPool) -> Self {
        Self {
            scoped,
            pool,
            organisations: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The organisation of `tenant`, `None` when the tenant does not exist.
    async fn organisation(&self, ctx: &RequestContext) -> Result<Option<i64>, AuthzError> {
        let tenant = ctx.tenant_id;
        if let Some(&org) = self
            .organisations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&tenant)
        {
            return Ok(Some(org));
        }
        let standing = namespace_state(&self.pool, tenant, ctx.namespace_id)
            .await
            .map_err(|e| AuthzError::Unavailable(format!("reading the tenant: {e}")))?;
        let org = standing.map(|s| s.organisation_id);
        if let Some(org) = org {
            self.organisations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(tenant, org);
        }
        Ok(org)
    }
}

#[async_trait]
impl Authorizer for RoleAuthorizer {
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: &Resource,
    ) -> Result<(), AuthzError> {
        let principal = &ctx.principal;
        // Only the credentials of the configuration file carry a scope and a tool list of their
        // own. Any other principal is authorized by its bindings alone: one with none reaches
        // nothing, never everything.
        if matches!(
            principal.auth_method,
            AuthMethod::StaticBearer | AuthMethod::Mtls | AuthMethod::Local
        ) {
            return self.scoped.authorize(ctx, action, resource).await;
        }
        // A binding that does not parse grants nothing (fail closed); authentication only
        // hands out bindings it built.
        let bindings: Vec<Binding> = principal
            .roles
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        // A principal vouched for by one organisation (its API key's, its identity provider's)
        // reaches no tenant of another, whatever its bindings say.
        let organisation = match self.organisation(ctx).await? {
            Some(org) if principal.organisation_id.is_none_or(|own| own == org) => org,
            _ => return Err(AuthzError::OutOfScope),
        };
        match decide_tool(
            &bindings,
            organisation,
            ctx.tenant_id,
            ctx.namespace_id,
            action,
        ) {
            Verdict::Allowed => Ok(()),
            Verdict::OutOfScope => Err(AuthzError::OutOfScope),
            Verdict::Denied => Err(AuthzError::Denied(format!(
                "no role of {} allows {} in namespace {} of tenant {}",
                principal.subject,
                action.name(),
                ctx.namespace_id,
                ctx.tenant_id
            ))),
        }
    }
}
