//! Who may act: whoami, role bindings, API keys, identity providers.

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use decision_gate_store_enterprise::{
    ApiKeyRecord, BindingRecord, KeyScope, NewBinding, StoredProvider, api_key, binding,
    delete_provider, grant_role, list_api_keys, list_bindings as store_list_bindings, put_provider,
    revoke_api_key, revoke_binding as store_revoke_binding, stored_providers,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use std::sync::Arc;

use super::{Admin, Caller, Page, Paging, Problem, ProblemBody, namespace_id, tenant_id};
use crate::api_keys::{self, key_bindings};
use crate::oidc::IssuerConfig;
use crate::rbac::{AdminAction, Binding, Role, Target, may_grant};

pub(super) fn routes() -> Router<Admin> {
    Router::new()
        .route("/admin/v1/whoami", get(whoami))
        .route(
            "/admin/v1/organisations/{organisation_id}/role-bindings",
            get(list_bindings).post(grant_binding),
        )
        .route(
            "/admin/v1/role-bindings/{binding_id}",
            delete(revoke_binding),
        )
        .route(
            "/admin/v1/organisations/{organisation_id}/api-keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/v1/api-keys/{key_id}/rotate", post(rotate_key))
        .route("/admin/v1/api-keys/{key_id}/revoke", post(revoke_key))
        .route(
            "/admin/v1/organisations/{organisation_id}/identity-providers",
            get(list_identity_providers)
                .put(put_identity_provider)
                .delete(delete_identity_provider),
        )
}

/// The caller as the server sees it.
#[derive(Serialize, ToSchema)]
pub(super) struct WhoamiView {
    subject: String,
    issuer: Option<String>,
    credential_id: Option<String>,
    /// `api_key`, `oidc`, `static_bearer`, `mtls`.
    auth_method: String,
    organisation_id: Option<i64>,
    /// `<role>@<scope>` bindings.
    roles: Vec<String>,
    /// Whether the credential shows multi-factor authentication.
    mfa: bool,
    auth_time: Option<u64>,
}

/// Who am I: the caller's principal and bindings.
#[utoipa::path(get, path = "/admin/v1/whoami", tag = "access",
    responses((status = 200, body = WhoamiView), (status = 401, body = ProblemBody)))]
pub(super) async fn whoami(
    Extension(caller): Extension<Arc<Caller>>,
) -> Result<Json<WhoamiView>, Problem> {
    let p = &caller.principal;
    Ok(Json(WhoamiView {
        subject: p.subject.clone(),
        issuer: p.issuer.clone(),
        credential_id: p.credential_id.clone(),
        auth_method: p.auth_method.name().to_owned(),
        organisation_id: p.organisation_id,
        roles: p.roles.iter().cloned().collect(),
        mfa: p.mfa_level.is_some(),
        auth_time: p.auth_time,
    }))
}

/// Where a key or binding applies.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy)]
pub(super) struct ScopeView {
    organisation_id: i64,
    tenant_id: Option<u64>,
    namespace_id: Option<u64>,
}

impl From<KeyScope> for ScopeView {
    fn from(s: KeyScope) -> Self {
        Self {
            organisation_id: s.organisation_id,
            tenant_id: s.tenant_id.map(decision_gate_core::TenantId::get),
            namespace_id: s.namespace_id.map(decision_gate_core::NamespaceId::get),
        }
    }
}

fn key_scope(
    organisation_id: i64,
    tenant: Option<u64>,
    namespace: Option<u64>,
) -> Result<KeyScope, Problem> {
    if namespace.is_some() && tenant.is_none() {
        return Err(Problem::invalid(
            "namespace_id",
            "a namespace needs its tenant_id",
        ));
    }
    Ok(KeyScope {
        organisation_id,
        tenant_id: tenant.map(tenant_id).transpose()?,
        namespace_id: namespace.map(namespace_id).transpose()?,
    })
}

fn target_of(scope: KeyScope) -> Target {
    Target {
        organisation: scope.organisation_id,
        tenant: scope.tenant_id,
        namespace: scope.namespace_id,
    }
}

/// Refuses (403, recorded) a grant of `roles` at `scope` that the caller could not hold out.
async fn check_grants(
    admin: &Admin,
    caller: &Caller,
    scope: KeyScope,
    roles: &[String],
    action: AdminAction,
) -> Result<Vec<Binding>, Problem> {
    let granted = key_bindings(&scope, roles).map_err(|m| Problem::invalid("roles", m))?;
    let target = target_of(scope);
    if let Some(stronger) = granted
        .iter()
        .find(|g| !may_grant(&caller.bindings, scope.organisation_id, **g, action))
    {
        let problem = Problem::denied(format!(
            "{} holds no role that may hand out {stronger}: nobody grants more than they hold",
            caller.principal.subject
        ));
        admin.audit(caller, action, target, "", Err(&problem)).await;
        return Err(problem);
    }
    Ok(granted)
}

/// A role binding.
#[derive(Serialize, ToSchema)]
pub(super) struct BindingView {
    binding_id: i64,
    scope: ScopeView,
    issuer: String,
    subject: String,
    role: String,
    created_by: String,
    created_at: i64,
}

impl From<BindingRecord> for BindingView {
    fn from(b: BindingRecord) -> Self {
        Self {
            binding_id: b.binding_id,
            scope: b.scope.into(),
            issuer: b.issuer,
            subject: b.subject,
            role: b.role,
            created_by: b.created_by,
            created_at: b.created_at,
        }
    }
}

/// A role to grant.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantRequest {
    /// The subject's identity provider (its `iss`).
    issuer: String,
    /// The subject (`sub`).
    subject: String,
    /// `org_owner`, `tenant_admin`, `namespace_admin`, `operator`, `agent`, `auditor`, `viewer`.
    role: String,
    /// The only tenant (default: the whole organisation).
    tenant_id: Option<u64>,
    /// The only namespace of that tenant.
    namespace_id: Option<u64>,
}

/// Requests are bounded: text fields longer than this are refused by name.
const MAX_TEXT_BYTES: usize = 1024;

fn text_field(field: &str, value: &str) -> Result<(), Problem> {
    if value.is_empty() || value.len() > MAX_TEXT_BYTES || value.chars().any(char::is_control) {
        return Err(Problem::invalid(
            field,
            format!("must be 1 to {MAX_TEXT_BYTES} bytes without control characters"),
        ));
    }
    Ok(())
}

fn list_target(organisation_id: i64, paging: &Paging) -> Result<Target, Problem> {
    Ok(Target {
        organisation: organisation_id,
        tenant: paging.tenant_id.map(tenant_id).transpose()?,
        namespace: None,
    })
}

/// List role bindings (of one tenant with `tenant_id`).
#[utoipa::path(get, path = "/admin/v1/organisations/{organisation_id}/role-bindings", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation"), Paging),
    responses((status = 200, body = Page<BindingView>), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody)))]
pub(super) async fn list_bindings(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<BindingView>>, Problem> {
    let target = list_target(organisation_id, &paging)?;
    admin
        .authorize(&caller, target, AdminAction::RoleBindingList)
        .await?;
    let after = paging
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| Problem::invalid("cursor", "not a cursor of this list"))
        })
        .transpose()?;
    let rows = store_list_bindings(
        admin.pool(),
        organisation_id,
        target.tenant,
        after,
        paging.limit(),
    )
    .await?;
    let items = rows.into_iter().map(BindingView::from).collect();
    Ok(Json(Page::of(items, paging.limit(), |b| {
        b.binding_id.to_string()
    })))
}

/// Grant a role (step-up).
#[utoipa::path(post, path = "/admin/v1/organisations/{organisation_id}/role-bindings", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    request_body = GrantRequest,
    responses((status = 201, body = BindingView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub(super) async fn grant_binding(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Json(body): Json<GrantRequest>,
) -> Result<(StatusCode, Json<BindingView>), Problem> {
    let scope = key_scope(organisation_id, body.tenant_id, body.namespace_id)?;
    let target = target_of(scope);
    let action = AdminAction::RoleBindingGrant;
    admin.authorize(&caller, target, action).await?;
    let input =
        text_field("issuer", &body.issuer).and_then(|()| text_field("subject", &body.subject));
    admin.checked(&caller, action, target, input).await?;
    check_grants(
        &admin,
        &caller,
        scope,
        std::slice::from_ref(&body.role),
        action,
    )
    .await?;
    let result = grant_role(
        admin.pool(),
        &NewBinding {
            scope,
            issuer: body.issuer,
            subject: body.subject,
            role: body.role,
            created_by: caller.principal.subject.clone(),
        },
    )
    .await
    .map_err(Problem::from);
    let resource = result
        .as_ref()
        .map(|b| format!("role_binding/{}", b.binding_id))
        .unwrap_or_default();
    let stored = admin
        .change(&caller, action, target, &resource, result)
        .await?;
    Ok((StatusCode::CREATED, Json(stored.into())))
}

/// Revoke a role binding.
#[utoipa::path(delete, path = "/admin/v1/role-bindings/{binding_id}", tag = "access",
    params(("binding_id" = i64, Path, description = "The binding")),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn revoke_binding(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(binding_id): Path<i64>,
) -> Result<StatusCode, Problem> {
    let found = binding(admin.pool(), binding_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("role binding {binding_id}")))?;
    let target = target_of(found.scope);
    let action = AdminAction::RoleBindingRevoke;
    admin.authorize(&caller, target, action).await?;
    check_grants(
        &admin,
        &caller,
        found.scope,
        std::slice::from_ref(&found.role),
        action,
    )
    .await?;
    let result = store_revoke_binding(admin.pool(), binding_id)
        .await
        .map_err(Problem::from)
        .and_then(|b| b.ok_or_else(|| Problem::not_found(format!("role binding {binding_id}"))));
    admin
        .change(
            &caller,
            action,
            target,
            &format!("role_binding/{binding_id}"),
            result,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// An API key, never its secret.
#[derive(Serialize, ToSchema)]
pub(super) struct KeyView {
    key_id: String,
    scope: ScopeView,
    roles: Vec<String>,
    name: String,
    created_by: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaces: Option<String>,
    usable: bool,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            key_id: k.key_id,
            scope: k.scope.into(),
            roles: k.roles,
            name: k.name,
            created_by: k.created_by,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            replaces: k.replaces,
            usable: k.usable,
        }
    }
}

/// A key just issued: the one time its secret is shown.
#[derive(Serialize, ToSchema)]
pub(super) struct IssuedView {
    /// `dg_<key id>_<secret>`: store it now, it is never shown again.
    key: String,
    record: KeyView,
}

/// A key to create.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKeyRequest {
    /// A name for people.
    name: String,
    /// Its roles.
    roles: Vec<String>,
    /// The only tenant (default: the whole organisation).
    tenant_id: Option<u64>,
    /// The only namespace of that tenant.
    namespace_id: Option<u64>,
    /// Seconds until it expires (default: never).
    expires_in_s: Option<i64>,
}

/// How to rotate a key.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateRequest {
    /// Seconds the old key keeps working (default: `identity.rotation_overlap_s`).
    overlap_s: Option<i64>,
    /// Seconds until the new key expires (default: never).
    expires_in_s: Option<i64>,
}

fn pepper(admin: &Admin) -> Result<&api_keys::Pepper, Problem> {
    admin.settings.pepper.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "API keys are not set up on this server (no pepper file)",
        )
    })
}

/// List API keys (of one tenant with `tenant_id`).
#[utoipa::path(get, path = "/admin/v1/organisations/{organisation_id}/api-keys", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation"), Paging),
    responses((status = 200, body = Page<KeyView>), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody)))]
pub(super) async fn list_keys(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Query(paging): Query<Paging>,
) -> Result<Json<Page<KeyView>>, Problem> {
    let target = list_target(organisation_id, &paging)?;
    admin
        .authorize(&caller, target, AdminAction::ApiKeyList)
        .await?;
    let after = paging.after(|c| Some(c.to_owned()))?;
    let rows = list_api_keys(
        admin.pool(),
        organisation_id,
        target.tenant,
        after.as_deref(),
        paging.limit(),
    )
    .await?;
    let items = rows.into_iter().map(KeyView::from).collect();
    Ok(Json(Page::of(items, paging.limit(), |k| k.key_id.clone())))
}

/// Create an API key (step-up); the answer holds the key, shown once.
#[utoipa::path(post, path = "/admin/v1/organisations/{organisation_id}/api-keys", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    request_body = CreateKeyRequest,
    responses((status = 201, body = IssuedView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub(super) async fn create_key(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Json(body): Json<CreateKeyRequest>,
) -> Result<(StatusCode, Json<IssuedView>), Problem> {
    let scope = key_scope(organisation_id, body.tenant_id, body.namespace_id)?;
    let target = target_of(scope);
    let action = AdminAction::ApiKeyCreate;
    admin.authorize(&caller, target, action).await?;
    let input = if body.roles.len() > Role::ALL.len() {
        Err(Problem::invalid(
            "roles",
            format!(
                "give 1 to {} roles, got {}",
                Role::ALL.len(),
                body.roles.len()
            ),
        ))
    } else {
        pepper(&admin).map(drop)
    };
    admin.checked(&caller, action, target, input).await?;
    check_grants(&admin, &caller, scope, &body.roles, action).await?;
    let result = api_keys::issue(
        admin.pool(),
        pepper(&admin)?,
        scope,
        &body.roles,
        &body.name,
        &caller.principal.subject,
        body.expires_in_s,
    )
    .await
    .map_err(Problem::from);
    let resource = result
        .as_ref()
        .map(|(_, r)| format!("api_key/{}", r.key_id))
        .unwrap_or_default();
    let (key, record) = admin
        .change(&caller, action, target, &resource, result)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedView {
            key: key.token,
            record: record.into(),
        }),
    ))
}

/// The stored key `key_id` and its target; 404 when it does not exist.
async fn key_target(admin: &Admin, key_id: &str) -> Result<(ApiKeyRecord, Target), Problem> {
    let found = api_key(admin.pool(), key_id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("api key {key_id}")))?;
    let target = target_of(found.scope);
    Ok((found, target))
}

/// Rotate an API key (step-up): a new key with the same scope and roles; the old one keeps
/// working for the overlap.
#[utoipa::path(post, path = "/admin/v1/api-keys/{key_id}/rotate", tag = "access",
    params(("key_id" = String, Path, description = "The key id")),
    request_body = RotateRequest,
    responses((status = 201, body = IssuedView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody)))]
pub(super) async fn rotate_key(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(key_id): Path<String>,
    body: Option<Json<RotateRequest>>,
) -> Result<(StatusCode, Json<IssuedView>), Problem> {
    let (found, target) = key_target(&admin, &key_id).await?;
    let action = AdminAction::ApiKeyRotate;
    admin.authorize(&caller, target, action).await?;
    check_grants(&admin, &caller, found.scope, &found.roles, action).await?;
    let body = body.map(|Json(b)| b).unwrap_or_default();
    let overlap = body.overlap_s.unwrap_or(admin.settings.rotation_overlap_s);
    admin
        .checked(&caller, action, target, pepper(&admin).map(drop))
        .await?;
    let result = api_keys::rotate(
        admin.pool(),
        pepper(&admin)?,
        &key_id,
        &caller.principal.subject,
        overlap,
        body.expires_in_s,
    )
    .await
    .map_err(Problem::from);
    let (key, _, created) = admin
        .change(
            &caller,
            action,
            target,
            &format!("api_key/{key_id}"),
            result,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedView {
            key: key.token,
            record: created.into(),
        }),
    ))
}

/// Revoke an API key: refused on every replica within a second.
#[utoipa::path(post, path = "/admin/v1/api-keys/{key_id}/revoke", tag = "access",
    params(("key_id" = String, Path, description = "The key id")),
    responses((status = 200, body = KeyView), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody)))]
pub(super) async fn revoke_key(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(key_id): Path<String>,
) -> Result<Json<KeyView>, Problem> {
    let (_, target) = key_target(&admin, &key_id).await?;
    let action = AdminAction::ApiKeyRevoke;
    admin.authorize(&caller, target, action).await?;
    let result = revoke_api_key(admin.pool(), &key_id)
        .await
        .map_err(Problem::from)
        .and_then(|k| k.ok_or_else(|| Problem::not_found(format!("api key {key_id}"))));
    let record = admin
        .change(
            &caller,
            action,
            target,
            &format!("api_key/{key_id}"),
            result,
        )
        .await?;
    Ok(Json(record.into()))
}

/// An identity provider the server trusts.
#[derive(Serialize, ToSchema)]
pub(super) struct IdentityProviderView {
    issuer: String,
    organisation_id: i64,
    /// `configuration` (the file's `[[identity.issuers]]`) or `admin_api`.
    source: &'static str,
    /// The settings, for providers set through the admin API.
    settings: Option<IssuerConfig>,
}

fn org_level(organisation_id: i64) -> Target {
    Target {
        organisation: organisation_id,
        tenant: None,
        namespace: None,
    }
}

/// List the identity providers of an organisation: those of the configuration file and those
/// set through the admin API.
#[utoipa::path(get, path = "/admin/v1/organisations/{organisation_id}/identity-providers", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    responses((status = 200, body = Vec<IdentityProviderView>), (status = 403, body = ProblemBody),
              (status = 404, body = ProblemBody)))]
pub(super) async fn list_identity_providers(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
) -> Result<Json<Vec<IdentityProviderView>>, Problem> {
    admin
        .authorize(
            &caller,
            org_level(organisation_id),
            AdminAction::IdentityProviderRead,
        )
        .await?;
    let configured = admin
        .settings
        .issuers
        .iter()
        .filter(|(_, org)| *org == organisation_id)
        .map(|(issuer, org)| IdentityProviderView {
            issuer: issuer.clone(),
            organisation_id: *org,
            source: "configuration",
            settings: None,
        });
    let stored = stored_providers(admin.pool())
        .await?
        .into_iter()
        .filter(|p| p.organisation_id == organisation_id)
        .map(|p| IdentityProviderView {
            settings: serde_json::from_str(&p.settings_json).ok(),
            issuer: p.issuer,
            organisation_id: p.organisation_id,
            source: "admin_api",
        });
    Ok(Json(configured.chain(stored).collect()))
}

/// Trust an OpenID provider for an organisation, or change its settings (step-up). The body is
/// an `[[identity.issuers]]` entry; every replica uses it within a second.
#[utoipa::path(put, path = "/admin/v1/organisations/{organisation_id}/identity-providers", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation")),
    request_body = IssuerConfig,
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody),
              (status = 409, body = ProblemBody), (status = 422, body = ProblemBody)))]
pub(super) async fn put_identity_provider(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Json(mut body): Json<IssuerConfig>,
) -> Result<StatusCode, Problem> {
    let target = org_level(organisation_id);
    let action = AdminAction::IdentityProviderWrite;
    admin.authorize(&caller, target, action).await?;
    if body.audience.is_none() {
        body.audience.clone_from(&admin.settings.resource);
    }
    let mut problems = Vec::new();
    body.problems("identity_provider", &mut problems);
    let input = if body.organisation_id == organisation_id {
        problems
            .into_iter()
            .next()
            .map_or(Ok(()), |(field, message)| {
                Err(Problem::invalid(&field, message))
            })
    } else {
        Err(Problem::invalid(
            "organisation_id",
            format!("must be the organisation of the path, {organisation_id}"),
        ))
    };
    admin.checked(&caller, action, target, input).await?;
    let resource = format!("identity_provider/{}", body.issuer);
    let result = if admin
        .settings
        .issuers
        .iter()
        .any(|(i, _)| *i == body.issuer)
    {
        Err(Problem::from(
            decision_gate_store_enterprise::PgError::Conflict {
                what: "identity provider (set in the configuration file)",
                id: body.issuer.clone(),
            },
        ))
    } else {
        let settings_json =
            serde_json::to_string(&body).map_err(|e| Problem::invalid("identity_provider", e))?;
        put_provider(
            admin.pool(),
            &StoredProvider {
                issuer: body.issuer.clone(),
                organisation_id,
                settings_json,
            },
            &caller.principal.subject,
        )
        .await
        .map_err(Problem::from)
    };
    admin
        .change(&caller, action, target, &resource, result)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Which provider to remove.
#[derive(Deserialize, utoipa::IntoParams)]
pub(super) struct IssuerParam {
    /// The issuer identifier.
    issuer: String,
}

/// Stop trusting an OpenID provider set through the admin API (step-up); its tokens are
/// refused on every replica within a second.
#[utoipa::path(delete, path = "/admin/v1/organisations/{organisation_id}/identity-providers", tag = "access",
    params(("organisation_id" = i64, Path, description = "The organisation"), IssuerParam),
    responses((status = 204), (status = 403, body = ProblemBody), (status = 404, body = ProblemBody)))]
pub(super) async fn delete_identity_provider(
    State(admin): State<Admin>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(organisation_id): Path<i64>,
    Query(param): Query<IssuerParam>,
) -> Result<StatusCode, Problem> {
    let target = org_level(organisation_id);
    let action = AdminAction::IdentityProviderWrite;
    admin.authorize(&caller, target, action).await?;
    let result = delete_provider(admin.pool(), organisation_id, &param.issuer)
        .await
        .map_err(Problem::from)
        .and_then(|found| {
            found
                .then_some(())
                .ok_or_else(|| Problem::not_found(format!("identity provider {}", param.issuer)))
        });
    admin
        .change(
            &caller,
            action,
            target,
            &format!("identity_provider/{}", param.issuer),
            result,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
