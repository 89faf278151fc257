//! The Decision Gate enterprise server: the composition root that plugs the Postgres backends
//! (`decision-gate-store-enterprise`) into the same MCP and gRPC server the open-source binary
//! runs (`decision-gate-mcp`), with its configuration (`[database]`, `[tenancy]` beside the
//! open-source sections) and its administration: migrations, provisioning, the integrity scan.
//! Every audit and usage event is written to Postgres (ADR 0011); tenant and namespace states
//! are enforced by [`TenancyAuthorizer`]. Principals are API keys ([`api_keys`], bound to roles
//! at an organisation, tenant or namespace and authorized by [`RoleAuthorizer`] against the
//! permission matrix of [`rbac`]) and the configured bearer tokens and mTLS clients, each bound
//! to a tenant. Plans switch features, set rate limits ([`rate_limit`]) and quotas, which are
//! consumed in the transaction of the call that pays ([`plans`]). See ADR 0009, ADR 0015 and
//! ADR 0016.

pub mod admin;
pub mod api_keys;
mod authorize;
pub mod changes;
pub mod config;
pub mod credentials;
pub mod discovery;
mod gated;
pub mod oidc;
pub mod plans;
pub mod rate_limit;
pub mod rbac;
mod serve;
mod tenancy;

pub use authorize::RoleAuthorizer;
pub use gated::GatedStore;
pub use serve::{ServeOptions, serve};
pub use tenancy::TenancyAuthorizer;

use decision_gate_mcp::config::Problem;
use decision_gate_store_enterprise::{
    PgError, PgPool, Provisioned, create_namespace, create_organisation, create_tenant,
};
use serde::Serialize;

use crate::config::TenancyConfig;

/// Why an enterprise command failed.
#[derive(Debug, thiserror::Error)]
pub enum EnterpriseError {
    /// The configuration breaks a rule; each problem names its key.
    #[error("invalid configuration: {}", decision_gate_mcp::config::joined(.0))]
    Config(Vec<Problem>),
    /// The database refused or failed an administrative step, or is not one this binary may
    /// serve (unknown schema, unsafe role).
    #[error(transparent)]
    Database(#[from] PgError),
    /// The server could not start or stopped on an error.
    #[error(transparent)]
    Serve(#[from] decision_gate_mcp::ServeError),
}

/// What one provisioning pass did, record by record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProvisionReport {
    /// `organisation 1`, `tenant 2`, `namespace 2/1` that were created.
    pub created: Vec<String>,
    /// Those that existed already (nothing changed).
    pub existing: Vec<String>,
}

impl ProvisionReport {
    fn add(&mut self, what: String, outcome: Provisioned) {
        match outcome {
            Provisioned::Created => self.created.push(what),
            Provisioned::Existing => self.existing.push(what),
        }
    }
}

/// Creates the organisations, tenants and namespaces of `[tenancy]` that do not exist yet, on
/// the owner's pool. Idempotent; safe to run from several replicas at once.
///
/// # Errors
/// [`PgError`] from the first record that fails (a tenant in another organisation, an
/// unreachable database); records before it stay created.
pub async fn provision(
    owner: &PgPool,
    tenancy: &TenancyConfig,
) -> Result<ProvisionReport, PgError> {
    let mut report = ProvisionReport::default();
    for org in &tenancy.organisations {
        let outcome = create_organisation(owner, org.organisation_id, &org.name).await?;
        report.add(format!("organisation {}", org.organisation_id), outcome);
    }
    for tenant in &tenancy.tenants {
        let outcome = create_tenant(
            owner,
            tenant.organisation_id,
            tenant.tenant_id,
            &tenant.name,
        )
        .await?;
        report.add(format!("tenant {}", tenant.tenant_id), outcome);
        for ns in &tenant.namespaces {
            let outcome =
                create_namespace(owner, tenant.tenant_id, ns.namespace_id, &ns.name).await?;
            report.add(
                format!("namespace {}/{}", tenant.tenant_id, ns.namespace_id),
                outcome,
            );
        }
    }
    Ok(report)
}
