//! Enterprise storage for Decision Gate: the PostgreSQL backend of the core seams
//! `ScenarioStore`, `RunStore` and `SchemaRegistry` ([`PgStore`]), with tenant isolation in the
//! database itself, and its administration: migrations, the start-up schema check, tenancy
//! provisioning and the integrity scan, and the Postgres audit sink and usage meter
//! ([`PgAuditSink`], [`PgUsageMeter`]) that record every event not committed with a write.
//!
//! # Isolation
//! Every tenant-owned table leads its primary key with `tenant_id`, refers to its parents with
//! composite foreign keys `(tenant_id, ...)`, and has row-level security enabled and forced with
//! the policy `tenant_id = app.tenant_id`. The store connects as a dedicated application role
//! (neither superuser, BYPASSRLS nor owner; [`PgStore::connect`] refuses otherwise) and sets
//! `app.tenant_id` transaction-locally at the start of every transaction, so a query can only
//! ever see or write the rows of the tenant it was called for. See ADR 0008.
//!
//! # Roles and URLs
//! - The **owner** (the migration role, or a superuser) runs [`migrate`], the tenancy
//!   functions ([`create_organisation`], [`create_tenant`], [`create_namespace`]) and
//!   [`integrity_scan`]; it must bypass row-level security (BYPASSRLS or superuser).
//! - The **application role** serves: `PgStore::connect(app_url, &PoolConfig::default())`.
//!   [`migrate`] grants it exactly the privileges it needs when
//!   [`MigrateOptions::app_role`] names it.
//!
//! # Effects
//! Writes commit their usage and audit events in the same transaction (`owns_effects()` is
//! true; ADR 0003), through the same SQL function (`dg_record_effects`) the sink and meter use
//! for every other event (ADR 0011).

#[cfg(feature = "postgres")]
mod bindings;
#[cfg(feature = "postgres")]
mod codec;
#[cfg(feature = "postgres")]
mod error;
#[cfg(feature = "postgres")]
mod identity;
#[cfg(feature = "postgres")]
mod integrity;
#[cfg(feature = "postgres")]
mod migrate;
#[cfg(feature = "postgres")]
mod plans;
#[cfg(feature = "postgres")]
mod providers;
#[cfg(feature = "postgres")]
mod store;
#[cfg(feature = "postgres")]
mod tenancy;
#[cfg(feature = "postgres")]
mod trail;

#[cfg(feature = "postgres")]
pub use bindings::{
    BindingRecord, MAX_BINDING_PAGE, MAX_SUBJECT_BINDINGS, NewBinding, binding, grant_role,
    list_bindings, revoke_binding, subject_bindings,
};
#[cfg(feature = "postgres")]
pub use error::PgError;
#[cfg(feature = "postgres")]
pub use identity::{
    ApiKeyRecord, KeyScope, MAX_KEY_LIFETIME_S, MAX_KEY_PAGE, MAX_OVERLAP_S, NewApiKey, Successor,
    api_key, bootstrap_owner_key, create_api_key, list_api_keys, revoke_api_key, rotate_api_key,
};
#[cfg(feature = "postgres")]
pub use integrity::{
    Finding, FindingKind, integrity_scan, tables_without_forced_rls, tenant_tables,
};
#[cfg(feature = "postgres")]
pub use migrate::{
    MigrateOptions, MigrationInfo, MigrationReport, check_app_role, check_schema, grant_app_role,
    known_migrations, migrate,
};
#[cfg(feature = "postgres")]
pub use plans::{
    CounterState, ExportedEvent, Feature, MAX_PLAN_ID, MAX_PLANS, MAX_RATE, Override, Plan,
    PlanRates, QuotaLimit, Rate, assign_plan, check_plan_id, delete_plan, export_usage, list_plans,
    put_plan, set_override, tenant_plan, tenant_usage,
};
#[cfg(feature = "postgres")]
pub use providers::{
    MAX_STORED_PROVIDERS, StoredProvider, delete_provider, put_provider, stored_providers,
};
#[cfg(feature = "postgres")]
pub use sqlx::postgres::PgPool;
#[cfg(feature = "postgres")]
pub use store::{PgStore, PoolConfig};
#[cfg(feature = "postgres")]
pub use tenancy::{
    CHANGES_CHANNEL, LifecycleState, MAX_TENANCY_PAGE, NamespaceRow, NamespaceStanding,
    Provisioned, TenantRow, create_namespace, create_organisation, create_tenant, list_namespaces,
    list_tenants, namespace_state, organisation, set_organisation_state, set_state, tenant_state,
};
#[cfg(feature = "postgres")]
pub use trail::{PgAuditSink, PgUsageMeter, record_admin_event};
