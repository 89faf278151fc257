//! Organisations, tenants and namespaces: read, create, suspend or resume, delete. "Deleted"
//! is a state: a deleted tenant or namespace answers every tool `not_found` and cannot come
//! back; its records stay for the audit trail.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_store_enterprise::{
    LifecycleState, NamespaceRow, PgError, Provisioned, TenantRow,
    create_namespace as store_create_namespace, create_tenant as store_create_tenant,
    list_namespaces as store_list_namespaces, list_tenants as store_list_tenants, organisation,
    set_organisation_state as store_set_organisation_state, set_state,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::sync::Arc;

use super::{Admin, Caller, Page, Paging, Problem, ProblemBody, namespace_id, tenant_id};
use crate::rbac::{AdminAction, Target};

pub(super) fn routes() -> Router<Admin> {
    Router::new()
        .route(
            "/admin/v1/organisations/{organisation_id}",
            get(get_organisation).delete(delete_organisation),
        )
        .route(
            "/admin/v1/organisations/{organisation_id}/state",
            post(set_organisation_state),
        )
        .route(
            "/admin/v1/organisations/{organisation_id}/tenants",
            get(list_tenants).post(create_tenant),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}",
            get(get_tenant).delete(delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/state",
            post(set_tenant_state),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/namespaces",
            get(list_namespaces).post(create_namespace),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/namespaces/{namespace_id}",
            axum::routing::delete(delete_namespace),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/namespaces/{namespace_id}/state",
            post(set_namespace_state),
        )
}

/// An organisation.
#[derive(Serialize, ToSchema)]
pub(super) struct OrganisationView {
    organisation_id: i64,
    name: String,
    /// `active`, `suspended` or `deleted`.
    state: String,
}

/// A tenant.
#[derive(Serialize, ToSchema)]
pub(super) struct TenantView {
    tenant_id: u64,
    organisation_id: i64,
    name: String,
    /// `active`, `suspended` or `deleted`.
    state: String,
}

/// A namespace.
#[derive(Serialize, ToSchema)]
pub(super) struct NamespaceView {
    tenant_id: u64,
    namespace_id: u64,
    name: String,
    /// `active`, `suspended` or `deleted`.
    state: String,
}

/// A new tenant or namespace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    /// Its id (a tenant's: unique in the deployment; a namespace's: in its tenant).
    id: u64,
    /// Its name (1 to 256 bytes).
    name: String,
}

/// A state to move to.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct StateChange {
    /// `active` or `suspended` (deleting is `DELETE`).
    state: String,
}

fn state_text(state: LifecycleState) -> String {
    match state {
        LifecycleState::Active => "active",
        LifecycleState::Suspended => "suspended",
        LifecycleState::Deleted => "deleted",
    }
    .to_owned()
}

fn live_state(text: &str) -> Result<LifecycleState, Problem> {
    match text {
        "active" => Ok(LifecycleState::Active),
        "suspended" => Ok(LifecycleState::Suspended),
        _ => Err(Problem::invalid(
            "state",
            format!("must be active or suspended (delete with DELETE), got {text:?}"),
        )),
    }
}

fn tenant_view(organisation_id: i64, row: TenantRow) -> TenantView {
    TenantView {
        tenant_id: row.tenant_id.get(),
        organisation_id,
        name: row.name,
        state: state_text(row.state),
    }
}

fn namespace_view(tenant: TenantId, row: NamespaceRow) -> NamespaceView {
    NamespaceView {
        tenant_id: tenant.get(),
        namespace_id: row.namespace_id.get(),
        name: row.name,
        state: state_text(row.state),
    }
}

/// A creation that must make a new record: one that existed already is 409.
fn created(
    outcome: Result<Provisioned, PgError>,
    what: impl FnOnce() -> String,
) -> Result<(), Problem> {
    match outcome? {
        Provisioned::Created => Ok(()),
        Provisioned::Existing => Err(PgError::Exists(what()).into()),
    }
}

fn org_target(organisation: i64) -> Target {
    Target {
        organisation,
        tenant: None,
        namespace: None,
    }
}

/// Read an organisation.
#[utoipa::path(get, path = "/admin/v1/organisations/{organisation_id}", tag = "tenancy",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    responses((status = 200, body = OrganisationView), (status = 404, body = ProblemBody)))]
pub(super) async fn get_organisation(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
) -> Result<Json<OrganisationView>, Problem> {
    admin
        .authorize(
            &caller,
            org_target(organisation_id),
            AdminAction::OrganisationRead,
        )
        .await?;
    let (name, state) = organisation(admin.pool(), organisation_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("organisation {organisation_id}")))?;
    Ok(Json(OrganisationView {
        organisation_id,
        name,
        state: state_text(state),
    }))
}

/// Suspend or resume an organisation: while suspended, every tool call into its tenants is
/// `permission_denied` (`organisation_suspended`); the admin API stays open to resume it.
#[utoipa::path(post, path = "/admin/v1/organisations/{organisation_id}/state", tag = "tenancy",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    request_body = StateChange,
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn set_organisation_state(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Json(body): Json<StateChange>,
) -> Result<StatusCode, Problem> {
    let state = live_state(&body.state)?;
    move_state(
        &admin,
        &caller,
        Moved::Organisation(organisation_id),
        state,
        AdminAction::OrganisationSuspend,
    )
    .await
}

/// Delete an organisation (step-up): every tool call into its tenants is `not_found` from then
/// on; the records stay for the trail.
#[utoipa::path(delete, path = "/admin/v1/organisations/{organisation_id}", tag = "tenancy",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_organisation(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
) -> Result<StatusCode, Problem> {
    move_state(
        &admin,
        &caller,
        Moved::Organisation(organisation_id),
        LifecycleState::Deleted,
        AdminAction::OrganisationDelete,
    )
    .await
}

/// List an organisation's tenants.
#[utoipa::path(get, path = "/admin/v1/organisations/{organisation_id}/tenants", tag = "tenancy",
    params(("organisation_id" = i64, Path, description = "The organisation"), Paging),
    responses((status = 200, body = Page<TenantView>), (status = 404, body = ProblemBody)))]
pub(super) async fn list_tenants(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<TenantView>>, Problem> {
    admin
        .authorize(
            &caller,
            org_target(organisation_id),
            AdminAction::TenantRead,
        )
        .await?;
    let after = paging.after(|c| c.parse().ok().and_then(|n| TenantId::new(n).ok()))?;
    let rows = store_list_tenants(admin.pool(), organisation_id, after, paging.limit()).await?;
    let items = rows
        .into_iter()
        .map(|r| tenant_view(organisation_id, r))
        .collect();
    Ok(Json(Page::of(items, paging.limit(), |t| {
        t.tenant_id.to_string()
    })))
}

/// Create a tenant in an organisation.
#[utoipa::path(post, path = "/admin/v1/organisations/{organisation_id}/tenants", tag = "tenancy",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    request_body = Create,
    responses((status = 201, body = TenantView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub(super) async fn create_tenant(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Json(body): Json<Create>,
) -> Result<(StatusCode, Json<TenantView>), Problem> {
    let target = org_target(organisation_id);
    admin
        .authorize(&caller, target, AdminAction::TenantCreate)
        .await?;
    let tenant = tenant_id(body.id)?;
    let result = created(
        store_create_tenant(admin.pool(), organisation_id, tenant, &body.name).await,
        || format!("tenant {tenant}"),
    );
    let resource = format!("tenant/{tenant}");
    admin
        .change(
            &caller,
            AdminAction::TenantCreate,
            target,
            &resource,
            result,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            tenant_id: tenant.get(),
            organisation_id,
            name: body.name,
            state: "active".to_owned(),
        }),
    ))
}

/// Read a tenant.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant")),
    responses((status = 200, body = TenantView), (status = 404, body = ProblemBody)))]
pub(super) async fn get_tenant(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
) -> Result<Json<TenantView>, Problem> {
    let tenant = tenant_id(tenant)?;
    let (target, standing) = admin.tenant_standing(tenant, None).await?;
    admin
        .authorize(&caller, target, AdminAction::TenantRead)
        .await?;
    Ok(Json(TenantView {
        tenant_id: tenant.get(),
        organisation_id: standing.organisation_id,
        name: standing.tenant_name,
        state: state_text(standing.tenant),
    }))
}

/// What a state change moves: an organisation, a tenant, or a namespace of a tenant.
#[derive(Clone, Copy)]
enum Moved {
    Organisation(i64),
    Tenant(u64, Option<u64>),
}

/// Moves an organisation, tenant or namespace to `state` under `action`, answering 404 when it
/// is gone.
async fn move_state(
    admin: &Admin,
    caller: &Caller,
    moved: Moved,
    state: LifecycleState,
    action: AdminAction,
) -> Result<StatusCode, Problem> {
    let (target, resource) = match moved {
        Moved::Organisation(o) => (org_target(o), format!("organisation/{o}")),
        Moved::Tenant(tenant, namespace) => {
            let tenant = tenant_id(tenant)?;
            let namespace = namespace.map(namespace_id).transpose()?;
            let resource = match namespace {
                Some(n) => format!("namespace/{tenant}/{n}"),
                None => format!("tenant/{tenant}"),
            };
            (admin.tenant_target(tenant, namespace).await?, resource)
        }
    };
    admin.authorize(caller, target, action).await?;
    let moved = match target.tenant {
        Some(tenant) => set_state(admin.pool(), tenant, target.namespace, state).await,
        None => store_set_organisation_state(admin.pool(), target.organisation, state).await,
    };
    let result = match moved {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Problem::not_found(resource.replace('/', " "))),
        Err(e) => Err(e.into()),
    };
    admin
        .change(caller, action, target, &resource, result)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Suspend or resume a tenant.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/state", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant")),
    request_body = StateChange,
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn set_tenant_state(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
    Json(body): Json<StateChange>,
) -> Result<StatusCode, Problem> {
    let state = live_state(&body.state)?;
    move_state(
        &admin,
        &caller,
        Moved::Tenant(tenant, None),
        state,
        AdminAction::TenantSuspend,
    )
    .await
}

/// Delete a tenant (step-up).
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant")),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_tenant(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
) -> Result<StatusCode, Problem> {
    move_state(
        &admin,
        &caller,
        Moved::Tenant(tenant, None),
        LifecycleState::Deleted,
        AdminAction::TenantDelete,
    )
    .await
}

/// List a tenant's namespaces.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/namespaces", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant"), Paging),
    responses((status = 200, body = Page<NamespaceView>), (status = 404, body = ProblemBody)))]
pub(super) async fn list_namespaces(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<NamespaceView>>, Problem> {
    let tenant = tenant_id(tenant)?;
    let target = admin.tenant_target(tenant, None).await?;
    admin
        .authorize(&caller, target, AdminAction::NamespaceRead)
        .await?;
    let after = paging.after(|c| c.parse().ok().and_then(|n| NamespaceId::new(n).ok()))?;
    let rows = store_list_namespaces(admin.pool(), tenant, after, paging.limit()).await?;
    let items = rows
        .into_iter()
        .map(|r| namespace_view(tenant, r))
        .collect();
    Ok(Json(Page::of(items, paging.limit(), |n| {
        n.namespace_id.to_string()
    })))
}

/// Create a namespace in a tenant.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/namespaces", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant")),
    request_body = Create,
    responses((status = 201, body = NamespaceView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody), (status = 409, body = ProblemBody)))]
pub(super) async fn create_namespace(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(tenant): Path<u64>,
    Json(body): Json<Create>,
) -> Result<(StatusCode, Json<NamespaceView>), Problem> {
    let tenant = tenant_id(tenant)?;
    let target = admin.tenant_target(tenant, None).await?;
    admin
        .authorize(&caller, target, AdminAction::NamespaceCreate)
        .await?;
    let namespace = namespace_id(body.id)?;
    let result = created(
        store_create_namespace(admin.pool(), tenant, namespace, &body.name).await,
        || format!("namespace {tenant}/{namespace}"),
    );
    let resource = format!("namespace/{tenant}/{namespace}");
    admin
        .change(
            &caller,
            AdminAction::NamespaceCreate,
            target,
            &resource,
            result,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(NamespaceView {
            tenant_id: tenant.get(),
            namespace_id: namespace.get(),
            name: body.name,
            state: "active".to_owned(),
        }),
    ))
}

/// Suspend or resume a namespace.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/namespaces/{namespace_id}/state", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant"),
           ("namespace_id" = u64, Path, description = "The namespace")),
    request_body = StateChange,
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn set_namespace_state(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((tenant, namespace)): Path<(u64, u64)>,
    Json(body): Json<StateChange>,
) -> Result<StatusCode, Problem> {
    let state = live_state(&body.state)?;
    move_state(
        &admin,
        &caller,
        Moved::Tenant(tenant, Some(namespace)),
        state,
        AdminAction::NamespaceSuspend,
    )
    .await
}

/// Delete a namespace.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/namespaces/{namespace_id}", tag = "tenancy",
    params(("tenant_id" = u64, Path, description = "The tenant"),
           ("namespace_id" = u64, Path, description = "The namespace")),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_namespace(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path((tenant, namespace)): Path<(u64, u64)>,
) -> Result<StatusCode, Problem> {
    move_state(
        &admin,
        &caller,
        Moved::Tenant(tenant, Some(namespace)),
        LifecycleState::Deleted,
        AdminAction::NamespaceDelete,
    )
    .await
}
