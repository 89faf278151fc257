//! The admin API: REST and JSON under `/admin/v1`, its OpenAPI document (generated from this
//! code by `utoipa`) at `/admin/openapi.json`, mounted beside `/mcp` through the server
//! builder. Organisations' tenants and namespaces, role bindings, API keys, identity
//! providers, whoami, a tenant's usage and quotas.
//!
//! Every request passes the server's admission, like `/mcp` and gRPC (the source's failure
//! budget, authentication with API keys or OIDC tokens, the per-principal rate limit and
//! concurrency cap, the in-flight budget), and is authorized by the permission matrix
//! ([`crate::rbac::decide_admin`]): another
//! organisation's or tenant's resource is 404, exactly like a missing one; a missing
//! permission is 403; creating or rotating keys, granting roles and deleting tenants also need
//! a step-up (an OIDC token showing MFA, authenticated recently), which API keys never have.
//! Nobody grants a role stronger than their own or outside their scope. Errors are RFC 9457
//! `application/problem+json`; lists page with an opaque `cursor`. Every change and every
//! refusal is recorded in the deployment audit stream. Every change is announced to every
//! replica (`crate::changes`), so it is seen on the next call everywhere.

mod access;
mod tenancy;
mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use decision_gate_core::Principal;
use decision_gate_core::access::AccessRefusal;
use decision_gate_core::identity::{AuthMethod, Credentials, PeerCertificate};
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_mcp::admission::{Admission, Refusal};
use decision_gate_store_enterprise::{
    NamespaceStanding, PgError, PgPool, namespace_state, record_admin_event,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{OpenApi, ToSchema};

use crate::api_keys::Pepper;
use crate::rbac::{AdminAction, Binding, Target, Verdict, decide_admin};

/// The largest admin request body.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// The default and largest page of a list.
const DEFAULT_PAGE: u32 = 100;

/// What the admin API needs from the server it is mounted in.
pub struct AdminSettings {
    /// The application role's pool.
    pub pool: PgPool,
    /// The server's admission (the same checks `/mcp` and gRPC pass: the source's failure
    /// budget, authentication, rate limit, concurrency cap, in-flight budget).
    pub admission: Arc<Admission>,
    /// The API-key pepper (no pepper: keys cannot be created).
    pub pepper: Option<Pepper>,
    /// How long a rotated key keeps working, by default.
    pub rotation_overlap_s: i64,
    /// How recent a step-up authentication must be.
    pub step_up_max_age_s: u64,
    /// The configured identity providers (issuer, organisation), for reading.
    pub issuers: Vec<(String, i64)>,
    /// This server's resource identifier: the default audience of providers set here.
    pub resource: Option<String>,
}

/// The admin API's shared state.
#[derive(Clone)]
pub(crate) struct Admin {
    settings: Arc<AdminSettings>,
}

/// The admin API's routes, to mount with `ServerBuilder::routes`.
pub fn router(settings: AdminSettings) -> Router {
    let state = Admin {
        settings: Arc::new(settings),
    };
    let admitted = Router::new()
        .merge(tenancy::routes())
        .merge(access::routes())
        .merge(usage::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .route("/admin/openapi.json", get(openapi))
        .merge(admitted)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Decision Gate admin API", version = "1"),
    paths(
        access::whoami,
        tenancy::get_organisation,
        tenancy::set_organisation_state,
        tenancy::delete_organisation,
        tenancy::list_tenants,
        tenancy::create_tenant,
        tenancy::get_tenant,
        tenancy::set_tenant_state,
        tenancy::delete_tenant,
        tenancy::list_namespaces,
        tenancy::create_namespace,
        tenancy::set_namespace_state,
        tenancy::delete_namespace,
        access::list_bindings,
        access::grant_binding,
        access::revoke_binding,
        access::list_keys,
        access::create_key,
        access::rotate_key,
        access::revoke_key,
        access::list_identity_providers,
        access::put_identity_provider,
        access::delete_identity_provider,
        usage::get_usage,
    ),
    components(schemas(ProblemBody))
)]
pub struct AdminApi;

async fn openapi() -> Response {
    match AdminApi::openapi().to_json() {
        Ok(doc) => ([(header::CONTENT_TYPE, "application/json")], doc).into_response(),
        Err(e) => Problem::internal(format!("the OpenAPI document: {e}")).into_response(),
    }
}

/// An RFC 9457 problem.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
    challenge: Option<String>,
}

/// The body of an RFC 9457 problem (`application/problem+json`).
#[derive(Serialize, Deserialize, ToSchema)]
pub(crate) struct ProblemBody {
    /// `urn:decision-gate:problem:<kind>`.
    #[serde(rename = "type")]
    kind: String,
    /// The HTTP status's phrase.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened, in words.
    detail: String,
}

impl Problem {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            challenge: None,
        }
    }

    pub(crate) fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub(crate) fn denied(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "permission_denied", detail)
    }

    pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            format!("{field}: {message}"),
        )
    }

    fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
    }

    fn body(&self) -> ProblemBody {
        ProblemBody {
            kind: format!("urn:decision-gate:problem:{}", self.kind),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        }
    }
}

impl From<PgError> for Problem {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Invalid { field, message } => Self::invalid(field, message),
            PgError::MissingParent { what, id } => {
                Self::invalid(what, format!("{id} does not exist"))
            }
            PgError::Conflict { .. } | PgError::Exists(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            PgError::Unavailable(_)
            | PgError::UnknownSchema(_)
            | PgError::SchemaBehind(_)
            | PgError::Migration(_)
            | PgError::UnsafeRole(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json!(self.body()).to_string(),
        )
            .into_response();
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// One page of a list and the cursor of the next.
#[derive(Serialize, ToSchema)]
pub(crate) struct Page<T: ToSchema> {
    /// The items.
    items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last.
    next_cursor: Option<String>,
}

impl<T: ToSchema> Page<T> {
    /// A page of `items` asked for with `limit`, the cursor made from the last item.
    fn of(items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Self {
        let next_cursor = (items.len() == limit as usize)
            .then(|| items.last().map(&cursor))
            .flatten();
        Self { items, next_cursor }
    }
}

/// `cursor` and `limit` of a list request.
#[derive(Deserialize, utoipa::IntoParams)]
pub(crate) struct Paging {
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// At most this many items (1..=500, default 100).
    limit: Option<u32>,
    /// Only this tenant's items (keys and role bindings).
    tenant_id: Option<u64>,
}

impl Paging {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_PAGE)
    }

    /// The position after which the page starts: the `cursor` read by `parse`, which answers
    /// `None` for a cursor this list never made.
    fn after<T>(&self, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, Problem> {
        self.cursor
            .as_deref()
            .map(|c| {
                parse(c).ok_or_else(|| Problem::invalid("cursor", "not a cursor of this list"))
            })
            .transpose()
    }
}

/// An authenticated admin caller.
pub(crate) struct Caller {
    principal: Principal,
    bindings: Vec<Binding>,
}

/// How an admin event ended.
#[derive(Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
enum Outcome<'a> {
    Success,
    Failure { error: &'a str, detail: &'a str },
}

impl Admin {
    fn pool(&self) -> &PgPool {
        &self.settings.pool
    }

    /// Answers a refused request: 401 with the challenge, 429 with `Retry-After`, 503; recorded
    /// when the admission says it gets its own event (past a source's failure budget the
    /// refusals are counted into one event per window instead).
    async fn refused(&self, refusal: Refusal) -> Response {
        let (status, kind) = match refusal.refusal {
            AccessRefusal::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AccessRefusal::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AccessRefusal::Overloaded | AccessRefusal::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            _ => (StatusCode::BAD_REQUEST, "invalid_input"),
        };
        if refusal.audited {
            let event = json!({
                "kind": "admin", "action": "admit", "principal": refusal.principal,
                "presented_hash": refusal.presented,
                "outcome": { "kind": "failure", "error": kind, "detail": refusal.message },
            });
            self.record(None, None, &event).await;
        }
        let mut problem = Problem::new(status, kind, refusal.message);
        if status == StatusCode::UNAUTHORIZED {
            problem.challenge = self.settings.admission.challenge().map(str::to_owned);
        }
        let mut response = problem.into_response();
        if let Some(ms) = refusal.retry_after_ms
            && let Ok(value) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }

    /// The organisation of `tenant`, as the target of an action on it (and `namespace`); a
    /// tenant that does not exist is 404, like one the caller may not see.
    pub(crate) async fn tenant_target(
        &self,
        tenant: TenantId,
        namespace: Option<NamespaceId>,
    ) -> Result<Target, Problem> {
        Ok(self.tenant_standing(tenant, namespace).await?.0)
    }

    /// [`Self::tenant_target`] with the tenant's standing read for it (one query).
    pub(crate) async fn tenant_standing(
        &self,
        tenant: TenantId,
        namespace: Option<NamespaceId>,
    ) -> Result<(Target, NamespaceStanding), Problem> {
        let standing = namespace_state(
            self.pool(),
            tenant,
            namespace.unwrap_or(NamespaceId::DEFAULT),
        )
        .await?
        .ok_or_else(|| Problem::not_found(format!("tenant {tenant}")))?;
        let target = Target {
            organisation: standing.organisation_id,
            tenant: Some(tenant),
            namespace,
        };
        Ok((target, standing))
    }

    /// Authorizes `action` on `target` (404 out of reach, 403 without the permission or the
    /// step-up); a refusal is recorded.
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        target: Target,
        action: AdminAction,
    ) -> Result<(), Problem> {
        let verdict = decide_admin(
            caller.principal.organisation_id,
            &caller.bindings,
            target,
            action,
        );
        let refused = match verdict {
            Verdict::Allowed if action.needs_step_up() => self.step_up(&caller.principal).err(),
            Verdict::Allowed => None,
            Verdict::Denied => Some(Problem::denied(format!(
                "no role of {} allows {} here",
                caller.principal.subject,
                action.name()
            ))),
            Verdict::OutOfScope => Some(match (target.tenant, target.namespace) {
                (Some(t), Some(n)) => Problem::not_found(format!("namespace {t}/{n}")),
                (Some(t), None) => Problem::not_found(format!("tenant {t}")),
                _ => Problem::not_found(format!("organisation {}", target.organisation)),
            }),
        };
        match refused {
            None => Ok(()),
            Some(problem) => {
                self.audit(caller, action, target, "", Err(&problem)).await;
                Err(problem)
            }
        }
    }

    /// The step-up rule: an OIDC principal whose token shows MFA, authenticated at most
    /// `step_up_max_age_s` ago.
    fn step_up(&self, principal: &Principal) -> Result<(), Problem> {
        let max_age = self.settings.step_up_max_age_s;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reason = if principal.auth_method != AuthMethod::Oidc {
            Some(
                "this action needs a step-up: an identity-provider token with multi-factor authentication; API keys can never perform it",
            )
        } else if principal.mfa_level.is_none() {
            Some("this action needs a step-up: the token shows no multi-factor authentication")
        } else if principal
            .auth_time
            .is_none_or(|at| now.saturating_sub(at) > max_age)
        {
            Some(
                "this action needs a step-up: the authentication is older than the step-up window; sign in again",
            )
        } else {
            None
        };
        match reason {
            None => Ok(()),
            Some(reason) => {
                let mut problem = Problem::new(StatusCode::FORBIDDEN, "step_up_required", reason);
                // RFC 9470: what the client should ask its identity provider for.
                problem.challenge = Some(format!(
                    r#"Bearer error="insufficient_user_authentication", error_description="multi-factor authentication within {max_age} seconds required", max_age={max_age}"#
                ));
                Err(problem)
            }
        }
    }

    /// Records an admin event: who did what to which resource, and how it ended.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: AdminAction,
        target: Target,
        resource: &str,
        outcome: Result<(), &Problem>,
    ) {
        let p = &caller.principal;
        let outcome = match outcome {
            Ok(()) => Outcome::Success,
            Err(problem) => Outcome::Failure {
                error: problem.kind,
                detail: &problem.detail,
            },
        };
        let event = json!({
            "kind": "admin",
            "action": action.name(),
            "principal": p.subject,
            "issuer": p.issuer,
            "credential_id": p.credential_id,
            "auth_method": p.auth_method.name(),
            "organisation_id": target.organisation,
            "tenant_id": target.tenant,
            "namespace_id": target.namespace,
            "resource": resource,
            "outcome": outcome,
        });
        self.record(target.tenant, target.namespace, &event).await;
    }

    async fn record(
        &self,
        tenant: Option<TenantId>,
        namespace: Option<NamespaceId>,
        event: &serde_json::Value,
    ) {
        if let Err(e) = record_admin_event(self.pool(), tenant, namespace, event).await {
            tracing::error!("the admin audit event was not recorded: {e}");
        }
    }

    /// The input check of a request `authorize` allowed: a refusal is recorded like every other.
    pub(crate) async fn checked(
        &self,
        caller: &Caller,
        action: AdminAction,
        target: Target,
        input: Result<(), Problem>,
    ) -> Result<(), Problem> {
        if let Err(problem) = &input {
            self.audit(caller, action, target, "", Err(problem)).await;
        }
        input
    }

    /// Runs a change that `authorize` allowed, records its outcome, and answers it.
    pub(crate) async fn change<T>(
        &self,
        caller: &Caller,
        action: AdminAction,
        target: Target,
        resource: &str,
        result: Result<T, Problem>,
    ) -> Result<T, Problem> {
        self.audit(caller, action, target, resource, result.as_ref().map(drop))
            .await;
        result
    }
}

/// Admits an admin request through the server's admission and hands its handler the
/// [`Caller`]; the in-flight slot is held until the answer is made.
async fn admit(State(admin): State<Admin>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let certificate = req.extensions().get::<PeerCertificate>().cloned();
    let authenticated = {
        let credentials = Credentials {
            transport: "http",
            peer,
            headers: req.headers(),
            certificate: certificate.as_ref(),
        };
        admin.settings.admission.authenticate(&credentials).await
    };
    let admitted = match authenticated.and_then(|who| admin.settings.admission.admit(who)) {
        Ok(admitted) => admitted,
        Err(refusal) => return admin.refused(refusal).await,
    };
    let principal = admitted.principal.clone();
    let bindings = principal
        .roles
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    req.extensions_mut().insert(Arc::new(Caller {
        principal,
        bindings,
    }));
    let response = next.run(req).await;
    drop(admitted);
    response
}

/// A tenant id from a path or body.
pub(crate) fn tenant_id(value: u64) -> Result<TenantId, Problem> {
    TenantId::new(value).map_err(|e| Problem::invalid("tenant_id", e))
}

/// A namespace id from a path or body.
pub(crate) fn namespace_id(value: u64) -> Result<NamespaceId, Problem> {
    NamespaceId::new(value).map_err(|e| Problem::invalid("namespace_id", e))
}
