//! The `Authorizer` suite on the enterprise server's whole authorizer for principals with role
//! bindings (`TenancyAuthorizer` over `RoleAuthorizer`), on a real Postgres: organisation 1
//! holds tenant 1 (namespace 1, active) and tenant 2 (namespace 1, suspended); tenant 3 is
//! missing.

use std::sync::Arc;
use std::time::Duration;

use decision_gate_core::access::{RequestContext, Resource, ScopeAuthorizer};
use decision_gate_core::conformance::{AuthorizerFixture, AuthzRequest};
use decision_gate_core::identity::AuthMethod;
use decision_gate_core::{Action, NamespaceId, TenantId};
use decision_gate_enterprise::{RoleAuthorizer, TenancyAuthorizer};
use decision_gate_store_enterprise::{PgPool, PoolConfig};

use crate::authorizer::{Held, Scratch};

fn authorizer(pool: PgPool) -> TenancyAuthorizer {
    TenancyAuthorizer::new(
        Arc::new(RoleAuthorizer::new(Arc::new(ScopeAuthorizer), pool.clone())),
        pool,
    )
}

/// An API-key principal of `organisation` with `roles`, acting in `t` / `ns`.
fn key(organisation: i64, roles: &[&str], t: u64, ns: u64) -> RequestContext {
    let mut ctx = RequestContext::local(
        TenantId::new(t).expect("tenant"),
        NamespaceId::new(ns).expect("namespace"),
    );
    ctx.principal.subject = "api_key:0123456789abcdef".into();
    ctx.principal.auth_method = AuthMethod::ApiKey;
    ctx.principal.organisation_id = Some(organisation);
    ctx.principal.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    ctx
}

async fn fixture() -> AuthorizerFixture {
    let (db, owner) = Scratch::create().await;
    let unreachable = PoolConfig {
        acquire_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    }
    .lazy_pool("postgres://postgres@127.0.0.1:1/none")
    .expect("a lazy pool");
    let run = Resource::new("run", "r");
    let ask = |ctx, action| AuthzRequest::new(ctx, action, run.clone());
    let agent = ["agent@namespace:1/1"];
    let owner_of_1 = ["org_owner@organisation:1"];
    AuthorizerFixture {
        authorizer: Arc::new(Held {
            authorizer: Arc::new(authorizer(owner)),
            _db: db,
        }),
        allowed: vec![
            ask(key(1, &agent, 1, 1), Action::ScenarioNext),
            ask(key(1, &owner_of_1, 1, 1), Action::ScenarioDefine),
        ],
        out_of_scope: vec![
            // Another tenant of its own organisation, where it has no binding.
            ask(key(1, &agent, 2, 1), Action::ScenarioNext),
            // A tenant that does not exist.
            ask(key(1, &owner_of_1, 3, 1), Action::ScenarioStatus),
            // A principal of another organisation, whatever its bindings claim.
            ask(key(2, &owner_of_1, 1, 1), Action::ScenarioStatus),
            // A principal with no binding reaches nothing.
            ask(key(1, &[], 1, 1), Action::ScenarioStatus),
        ],
        denied: vec![
            // Not the agent's permission.
            ask(key(1, &agent, 1, 1), Action::ScenarioDefine),
            // A suspended tenant, to its organisation's owner.
            ask(key(1, &owner_of_1, 2, 1), Action::ScenarioNext),
        ],
        undecidable: Some(Arc::new(authorizer(unreachable))),
    }
}

decision_gate_core::authorizer_conformance!(fixture);
