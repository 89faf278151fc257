//! Roles and the one permission matrix: which role may run which MCP tool (and so which gRPC
//! method, each authorized as its tool) and which administrative action, and where a role can
//! be bound. `Docs/security/rbac-matrix.md` is [`matrix_markdown`]'s output, checked by a test,
//! so the document cannot drift from the code.
//!
//! A principal carries its bindings as role strings, `<role>@<scope>`: `org_owner@organisation:1`,
//! `tenant_admin@tenant:7`, `agent@namespace:7/2` ([`Binding`]). A binding at a scope applies to
//! everything inside it.

use std::fmt;
use std::str::FromStr;

use decision_gate_core::Action;
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_mcp::grpc::RPC_ACTIONS;

/// A role, from the broadest to the narrowest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Owns an organisation: every tool and every administrative action in it.
    OrgOwner,
    /// Administers a tenant: its namespaces, keys and role bindings, and every tool.
    TenantAdmin,
    /// Administers a namespace: its keys and role bindings, and every tool.
    NamespaceAdmin,
    /// Runs the engine: every tool, no administration.
    Operator,
    /// An agent driving runs: starts them, submits, triggers, reads what it needs.
    Agent,
    /// Reads and exports the record: status, runpacks, the audit trail and usage.
    Auditor,
    /// Reads.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Self; 7] = [
        Self::OrgOwner,
        Self::TenantAdmin,
        Self::NamespaceAdmin,
        Self::Operator,
        Self::Agent,
        Self::Auditor,
        Self::Viewer,
    ];

    /// The snake_case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::OrgOwner => "org_owner",
            Self::TenantAdmin => "tenant_admin",
            Self::NamespaceAdmin => "namespace_admin",
            Self::Operator => "operator",
            Self::Agent => "agent",
            Self::Auditor => "auditor",
            Self::Viewer => "viewer",
        }
    }

    /// The role with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The narrowest scope it can be bound at: an organisation's owner owns the organisation,
    /// a tenant's administrator the whole tenant; the others can be bound to one namespace.
    #[must_use]
    pub fn narrowest(self) -> ScopeLevel {
        match self {
            Self::OrgOwner => ScopeLevel::Organisation,
            Self::TenantAdmin => ScopeLevel::Tenant,
            _ => ScopeLevel::Namespace,
        }
    }

    /// Whether the role may run `tool`.
    #[must_use]
    pub fn allows_tool(self, tool: Action) -> bool {
        use Action as A;
        match self {
            Self::OrgOwner | Self::TenantAdmin | Self::NamespaceAdmin | Self::Operator => true,
            Self::Agent => {
                matches!(
                    tool,
                    A::ScenarioStart
                        | A::ScenarioStatus
                        | A::ScenarioNext
                        | A::ScenarioSubmit
                        | A::ScenarioTrigger
                        | A::EvidenceQuery
                        | A::Precheck
                ) || Self::Viewer.allows_tool(tool)
            }
            Self::Auditor => {
                matches!(tool, A::RunpackExport | A::RunpackVerify)
                    || Self::Viewer.allows_tool(tool)
            }
            Self::Viewer => matches!(
                tool,
                A::ScenarioStatus
                    | A::ProvidersList
                    | A::ProviderContractGet
                    | A::ProviderCheckSchemaGet
                    | A::SchemasList
                    | A::SchemasGet
                    | A::ScenariosList
            ),
        }
    }

    /// Whether the role may perform `action` (within the scope it is bound at).
    #[must_use]
    pub fn allows_admin(self, action: AdminAction) -> bool {
        use AdminAction as A;
        match action {
            A::Whoami | A::OrganisationRead | A::TenantRead | A::NamespaceRead => true,
            A::OrganisationSuspend
            | A::OrganisationDelete
            | A::TenantCreate
            | A::TenantSuspend
            | A::TenantDelete
            | A::IdentityProviderWrite => self == Self::OrgOwner,
            A::NamespaceCreate | A::NamespaceSuspend | A::NamespaceDelete => {
                matches!(self, Self::OrgOwner | Self::TenantAdmin)
            }
            A::RoleBindingGrant
            | A::RoleBindingRevoke
            | A::ApiKeyCreate
            | A::ApiKeyRotate
            | A::ApiKeyRevoke => {
                matches!(
                    self,
                    Self::OrgOwner | Self::TenantAdmin | Self::NamespaceAdmin
                )
            }
            A::RoleBindingList | A::ApiKeyList => matches!(
                self,
                Self::OrgOwner | Self::TenantAdmin | Self::NamespaceAdmin | Self::Auditor
            ),
            A::IdentityProviderRead | A::AuditRead | A::UsageRead => {
                matches!(self, Self::OrgOwner | Self::TenantAdmin | Self::Auditor)
            }
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every administrative action of the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminAction {
    /// Who am I: the caller's principal and bindings.
    Whoami,
    /// Read an organisation.
    OrganisationRead,
    /// Suspend or resume an organisation (every tenant in it).
    OrganisationSuspend,
    /// Delete an organisation.
    OrganisationDelete,
    /// Create a tenant in an organisation.
    TenantCreate,
    /// Read a tenant.
    TenantRead,
    /// Suspend or resume a tenant.
    TenantSuspend,
    /// Delete a tenant.
    TenantDelete,
    /// Create a namespace in a tenant.
    NamespaceCreate,
    /// Read a namespace.
    NamespaceRead,
    /// Suspend or resume a namespace.
    NamespaceSuspend,
    /// Delete a namespace.
    NamespaceDelete,
    /// List role bindings.
    RoleBindingList,
    /// Grant a role.
    RoleBindingGrant,
    /// Revoke a role binding.
    RoleBindingRevoke,
    /// Create an API key.
    ApiKeyCreate,
    /// List API keys (never their secrets).
    ApiKeyList,
    /// Rotate an API key.
    ApiKeyRotate,
    /// Revoke an API key.
    ApiKeyRevoke,
    /// Read identity-provider settings.
    IdentityProviderRead,
    /// Change identity-provider settings.
    IdentityProviderWrite,
    /// Query the audit trail.
    AuditRead,
    /// Read usage.
    UsageRead,
}

impl AdminAction {
    /// Every administrative action.
    pub const ALL: [Self; 23] = [
        Self::Whoami,
        Self::OrganisationRead,
        Self::OrganisationSuspend,
        Self::OrganisationDelete,
        Self::TenantCreate,
        Self::TenantRead,
        Self::TenantSuspend,
        Self::TenantDelete,
        Self::NamespaceCreate,
        Self::NamespaceRead,
        Self::NamespaceSuspend,
        Self::NamespaceDelete,
        Self::RoleBindingList,
        Self::RoleBindingGrant,
        Self::RoleBindingRevoke,
        Self::ApiKeyCreate,
        Self::ApiKeyList,
        Self::ApiKeyRotate,
        Self::ApiKeyRevoke,
        Self::IdentityProviderRead,
        Self::IdentityProviderWrite,
        Self::AuditRead,
        Self::UsageRead,
    ];

    /// The snake_case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Whoami => "whoami",
            Self::OrganisationRead => "organisation_read",
            Self::OrganisationSuspend => "organisation_suspend",
            Self::OrganisationDelete => "organisation_delete",
            Self::TenantCreate => "tenant_create",
            Self::TenantRead => "tenant_read",
            Self::TenantSuspend => "tenant_suspend",
            Self::TenantDelete => "tenant_delete",
            Self::NamespaceCreate => "namespace_create",
            Self::NamespaceRead => "namespace_read",
            Self::NamespaceSuspend => "namespace_suspend",
            Self::NamespaceDelete => "namespace_delete",
            Self::RoleBindingList => "role_binding_list",
            Self::RoleBindingGrant => "role_binding_grant",
            Self::RoleBindingRevoke => "role_binding_revoke",
            Self::ApiKeyCreate => "api_key_create",
            Self::ApiKeyList => "api_key_list",
            Self::ApiKeyRotate => "api_key_rotate",
            Self::ApiKeyRevoke => "api_key_revoke",
            Self::IdentityProviderRead => "identity_provider_read",
            Self::IdentityProviderWrite => "identity_provider_write",
            Self::AuditRead => "audit_read",
            Self::UsageRead => "usage_read",
        }
    }

    /// Whether it needs a step-up: an OIDC token showing MFA, authenticated recently. API keys
    /// can never perform these.
    #[must_use]
    pub fn needs_step_up(self) -> bool {
        matches!(
            self,
            Self::ApiKeyCreate
                | Self::ApiKeyRotate
                | Self::RoleBindingGrant
                | Self::IdentityProviderWrite
                | Self::TenantDelete
                | Self::OrganisationDelete
        )
    }
}

/// How wide a scope is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeLevel {
    /// An organisation and all its tenants.
    Organisation,
    /// A tenant and all its namespaces.
    Tenant,
    /// One namespace.
    Namespace,
}

/// Where a role is bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// An organisation.
    Organisation(i64),
    /// A tenant.
    Tenant(TenantId),
    /// A namespace of a tenant.
    Namespace(TenantId, NamespaceId),
}

impl Scope {
    /// How wide it is.
    #[must_use]
    pub fn level(self) -> ScopeLevel {
        match self {
            Self::Organisation(_) => ScopeLevel::Organisation,
            Self::Tenant(_) => ScopeLevel::Tenant,
            Self::Namespace(..) => ScopeLevel::Namespace,
        }
    }

    /// Whether it reaches anything in `tenant` (of `organisation`).
    fn touches(self, organisation: i64, tenant: TenantId) -> bool {
        match self {
            Self::Organisation(o) => o == organisation,
            Self::Tenant(t) | Self::Namespace(t, _) => t == tenant,
        }
    }

    /// Whether it covers all of `namespace` in `tenant` (of `organisation`).
    fn covers(self, organisation: i64, tenant: TenantId, namespace: NamespaceId) -> bool {
        match self {
            Self::Organisation(o) => o == organisation,
            Self::Tenant(t) => t == tenant,
            Self::Namespace(t, n) => t == tenant && n == namespace,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Organisation(o) => write!(f, "organisation:{o}"),
            Self::Tenant(t) => write!(f, "tenant:{t}"),
            Self::Namespace(t, n) => write!(f, "namespace:{t}/{n}"),
        }
    }
}

/// A role bound at a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    /// The role.
    pub role: Role,
    /// Where.
    pub scope: Scope,
}

/// Why a binding could not be made or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The text is not `<role>@<scope>` with a known role and a valid scope.
    #[error(
        "{0:?} is not a role binding (`<role>@organisation:<id>`, `@tenant:<id>` or `@namespace:<tenant>/<namespace>`)"
    )]
    Malformed(String),
    /// The role cannot be bound that narrowly.
    #[error("{role} can be bound to an organisation{}, not to a {level:?}", if *.role == Role::OrgOwner { "" } else { " or a tenant" })]
    TooNarrow {
        /// The role.
        role: Role,
        /// The scope level asked for.
        level: ScopeLevel,
    },
}

impl Binding {
    /// `role` at `scope`, if the role can be bound that narrowly.
    ///
    /// # Errors
    /// [`BindingError::TooNarrow`] otherwise.
    pub fn new(role: Role, scope: Scope) -> Result<Self, BindingError> {
        if scope.level() > role.narrowest() {
            return Err(BindingError::TooNarrow {
                role,
                level: scope.level(),
            });
        }
        Ok(Self { role, scope })
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.role, self.scope)
    }
}

impl FromStr for Binding {
    type Err = BindingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || BindingError::Malformed(text.chars().take(80).collect());
        let (role, scope) = text.split_once('@').ok_or_else(malformed)?;
        let role = Role::from_name(role).ok_or_else(malformed)?;
        let tenant = |t: &str| {
            t.parse::<u64>()
                .ok()
                .and_then(|t| TenantId::new(t).ok())
                .ok_or_else(malformed)
        };
        let scope = if let Some(o) = scope.strip_prefix("organisation:") {
            Scope::Organisation(
                o.parse::<i64>()
                    .ok()
                    .filter(|o| *o > 0)
                    .ok_or_else(malformed)?,
            )
        } else if let Some(t) = scope.strip_prefix("tenant:") {
            Scope::Tenant(tenant(t)?)
        } else if let Some(tn) = scope.strip_prefix("namespace:") {
            let (t, n) = tn.split_once('/').ok_or_else(malformed)?;
            let n = n
                .parse::<u64>()
                .ok()
                .and_then(|n| NamespaceId::new(n).ok())
                .ok_or_else(malformed)?;
            Scope::Namespace(tenant(t)?, n)
        } else {
            return Err(malformed());
        };
        Self::new(role, scope)
    }
}

/// What a principal's bindings say about one call in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A binding covering the namespace allows it.
    Allowed,
    /// The principal reaches the tenant, but no binding covering the namespace allows it.
    Denied,
    /// The principal reaches nothing in the tenant: to it, the tenant does not exist.
    OutOfScope,
}

/// Decides a tool call in `namespace` of `tenant` (of `organisation`) from `bindings`.
#[must_use]
pub fn decide_tool(
    bindings: &[Binding],
    organisation: i64,
    tenant: TenantId,
    namespace: NamespaceId,
    tool: Action,
) -> Verdict {
    decide(bindings, organisation, tenant, namespace, |r| {
        r.allows_tool(tool)
    })
}

fn decide(
    bindings: &[Binding],
    organisation: i64,
    tenant: TenantId,
    namespace: NamespaceId,
    allows: impl Fn(Role) -> bool,
) -> Verdict {
    let mut touches = false;
    for b in bindings {
        if b.scope.covers(organisation, tenant, namespace) && allows(b.role) {
            return Verdict::Allowed;
        }
        touches |= b.scope.touches(organisation, tenant);
    }
    if touches {
        Verdict::Denied
    } else {
        Verdict::OutOfScope
    }
}

/// What an administrative action acts on: an organisation, or one of its tenants, or one
/// namespace of that tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The organisation.
    pub organisation: i64,
    /// The tenant, for tenant and namespace actions.
    pub tenant: Option<TenantId>,
    /// The namespace, for namespace actions.
    pub namespace: Option<NamespaceId>,
}

impl Target {
    /// The scope the target is.
    #[must_use]
    pub fn scope(self) -> Scope {
        match (self.tenant, self.namespace) {
            (Some(t), Some(n)) => Scope::Namespace(t, n),
            (Some(t), None) => Scope::Tenant(t),
            _ => Scope::Organisation(self.organisation),
        }
    }
}

/// Whether `outer` covers all of `inner`, both within `organisation`.
fn scope_covers(outer: Scope, inner: Scope, organisation: i64) -> bool {
    match (outer, inner) {
        (Scope::Organisation(o), _) => o == organisation,
        (Scope::Tenant(t), Scope::Tenant(u) | Scope::Namespace(u, _)) => t == u,
        (Scope::Namespace(t, n), Scope::Namespace(u, m)) => t == u && n == m,
        _ => false,
    }
}

/// Decides an administrative action on `target` for a principal of `organisation` (the one
/// its credential speaks for) with `bindings`. Another organisation, or a tenant the
/// principal has no binding in, is [`Verdict::OutOfScope`]; inside its reach, an action no
/// covering binding allows is [`Verdict::Denied`].
#[must_use]
pub fn decide_admin(
    organisation: Option<i64>,
    bindings: &[Binding],
    target: Target,
    action: AdminAction,
) -> Verdict {
    if organisation != Some(target.organisation) {
        return Verdict::OutOfScope;
    }
    let scope = target.scope();
    let mut touches = false;
    for b in bindings {
        if scope_covers(b.scope, scope, target.organisation) && b.role.allows_admin(action) {
            return Verdict::Allowed;
        }
        touches |= match (b.scope, target.tenant) {
            (Scope::Organisation(o), _) => o == target.organisation,
            (Scope::Tenant(t) | Scope::Namespace(t, _), Some(tenant)) => t == tenant,
            // An organisation-level target is visible to every member of the organisation.
            (Scope::Tenant(_) | Scope::Namespace(..), None) => true,
        };
    }
    if touches {
        Verdict::Denied
    } else {
        Verdict::OutOfScope
    }
}

/// How much a role may do, for the rule that nobody grants more than they hold: a smaller rank
/// may grant a larger or equal one.
fn rank(role: Role) -> u8 {
    match role {
        Role::OrgOwner => 0,
        Role::TenantAdmin => 1,
        Role::NamespaceAdmin => 2,
        Role::Operator => 3,
        Role::Agent | Role::Auditor => 4,
        Role::Viewer => 5,
    }
}

/// Whether a principal with `bindings` in `organisation` may hand out `granted` (as a role
/// binding or an API key's role): one of its bindings must cover the granted scope, allow
/// `action`, and hold a role at least as strong.
#[must_use]
pub fn may_grant(
    bindings: &[Binding],
    organisation: i64,
    granted: Binding,
    action: AdminAction,
) -> bool {
    bindings.iter().any(|b| {
        scope_covers(b.scope, granted.scope, organisation)
            && b.role.allows_admin(action)
            && rank(b.role) <= rank(granted.role)
    })
}

const YES: &str = "✓";
const NO: &str = "·";

/// The permission matrix as Markdown: `Docs/security/rbac-matrix.md`.
#[must_use]
pub fn matrix_markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "# Permission matrix\n\n\
         Generated from `enterprise/src/rbac.rs` by `decision-gate-enterprise rbac-matrix`; a test \
         fails when this file and the code differ. Do not edit by hand.\n\n\
         A role bound at an organisation applies to all its tenants, at a tenant to all its \
         namespaces. A call into a tenant the caller has no binding in answers `not_found`, \
         exactly like a tenant that does not exist; a call in a tenant it has a binding in, \
         without a role that allows the action in that namespace, answers \
         `permission_denied`.\n\n## Where each role can be bound\n\n| role | organisation | tenant | namespace |\n|---|---|---|---|\n",
    );
    for role in Role::ALL {
        let at = |level: ScopeLevel| if level <= role.narrowest() { YES } else { NO };
        out.push_str(&format!(
            "| `{role}` | {} | {} | {} |\n",
            at(ScopeLevel::Organisation),
            at(ScopeLevel::Tenant),
            at(ScopeLevel::Namespace)
        ));
    }
    out.push_str("\n## MCP tools and gRPC methods\n\n");
    header(&mut out, "tool", "gRPC methods");
    for tool in Action::ALL {
        let methods: Vec<String> = RPC_ACTIONS
            .iter()
            .filter(|(_, a)| *a == tool)
            .map(|(m, _)| format!("`{m}`"))
            .collect();
        row(&mut out, tool.name(), &methods.join(", "), |r| {
            r.allows_tool(tool)
        });
    }
    out.push_str(
        "\n## Administrative actions\n\nStep-up: the action needs an OIDC token whose `acr`/`amr` \
         shows multi-factor authentication and whose `auth_time` is recent; API keys can never \
         perform it.\n\n",
    );
    header(&mut out, "action", "step-up");
    for action in AdminAction::ALL {
        let step_up = if action.needs_step_up() { "yes" } else { "" };
        row(&mut out, action.name(), step_up, |r| r.allows_admin(action));
    }
    out
}

fn header(out: &mut String, first: &str, second: &str) {
    out.push_str(&format!("| {first} | {second} |"));
    for role in Role::ALL {
        out.push_str(&format!(" `{role}` |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(Role::ALL.len()));
    out.push('\n');
}

fn row(out: &mut String, name: &str, second: &str, allows: impl Fn(Role) -> bool) {
    out.push_str(&format!("| `{name}` | {second} |"));
    for role in Role::ALL {
        out.push_str(if allows(role) { " ✓ |" } else { " · |" });
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u64) -> TenantId {
        TenantId::new(n).unwrap()
    }
    fn n(n: u64) -> NamespaceId {
        NamespaceId::new(n).unwrap()
    }

    /// The document in the repository is exactly the code's matrix. Regenerate it with
    /// `cargo run -p decision-gate-enterprise -- rbac-matrix > Docs/security/rbac-matrix.md`.
    #[test]
    fn the_matrix_document_is_generated_from_the_code() {
        let file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../Docs/security/rbac-matrix.md"
        );
        let written = std::fs::read_to_string(file).unwrap();
        assert!(
            written == matrix_markdown(),
            "Docs/security/rbac-matrix.md differs from the code; regenerate it with \
             `cargo run -p decision-gate-enterprise -- rbac-matrix > Docs/security/rbac-matrix.md`"
        );
    }

    #[test]
    fn bindings_round_trip_and_refuse_what_they_cannot_be() {
        for text in [
            "org_owner@organisation:1",
            "tenant_admin@organisation:3",
            "tenant_admin@tenant:7",
            "agent@namespace:7/2",
            "viewer@tenant:9",
        ] {
            let b: Binding = text.parse().unwrap();
            assert_eq!(b.to_string(), text);
        }
        for text in [
            "",
            "agent",
            "root@tenant:1",
            "agent@tenant:0",
            "agent@tenant:x",
            "agent@namespace:7",
            "agent@namespace:7/0",
            "agent@organisation:-1",
            "agent@galaxy:1",
        ] {
            assert!(
                matches!(text.parse::<Binding>(), Err(BindingError::Malformed(_))),
                "{text}"
            );
        }
        assert!(matches!(
            "org_owner@tenant:1".parse::<Binding>(),
            Err(BindingError::TooNarrow { .. })
        ));
        assert!(matches!(
            "tenant_admin@namespace:1/1".parse::<Binding>(),
            Err(BindingError::TooNarrow { .. })
        ));
    }

    #[test]
    fn a_binding_reaches_its_scope_and_nothing_beside_it() {
        let agent: Binding = "agent@namespace:7/2".parse().unwrap();
        let owner: Binding = "org_owner@organisation:1".parse().unwrap();
        let call =
            |b: &[Binding], org, tenant, ns, tool| decide_tool(b, org, t(tenant), n(ns), tool);
        assert_eq!(
            call(&[agent], 1, 7, 2, Action::ScenarioNext),
            Verdict::Allowed
        );
        // Not the agent's permission, in its own namespace: denied.
        assert_eq!(
            call(&[agent], 1, 7, 2, Action::ScenarioDefine),
            Verdict::Denied
        );
        // Another namespace of its tenant: denied, the tenant is visible to it.
        assert_eq!(
            call(&[agent], 1, 7, 3, Action::ScenarioNext),
            Verdict::Denied
        );
        // Another tenant, even in the same organisation: not found.
        assert_eq!(
            call(&[agent], 1, 8, 2, Action::ScenarioNext),
            Verdict::OutOfScope
        );
        // The owner reaches every tenant of its organisation and nothing of another.
        assert_eq!(
            call(&[owner], 1, 8, 5, Action::ScenarioDefine),
            Verdict::Allowed
        );
        assert_eq!(
            call(&[owner], 2, 9, 1, Action::ScenarioStatus),
            Verdict::OutOfScope
        );
        // Bindings add up.
        assert_eq!(
            call(&[agent, owner], 1, 7, 3, Action::ScenarioNext),
            Verdict::Allowed
        );
        assert_eq!(
            call(&[], 1, 7, 2, Action::ScenarioStatus),
            Verdict::OutOfScope
        );
    }

    #[test]
    fn administration_reaches_the_bound_scope_and_grants_no_more_than_held() {
        let admin: Binding = "tenant_admin@tenant:7".parse().unwrap();
        let ns_admin: Binding = "namespace_admin@namespace:7/2".parse().unwrap();
        let target = |tenant: Option<u64>, ns: Option<u64>| Target {
            organisation: 1,
            tenant: tenant.map(t),
            namespace: ns.map(n),
        };
        let decide = |b: &[Binding], org, tg, a| decide_admin(org, b, tg, a);
        use AdminAction as A;
        assert_eq!(
            decide(
                &[admin],
                Some(1),
                target(Some(7), Some(3)),
                A::NamespaceSuspend
            ),
            Verdict::Allowed
        );
        assert_eq!(
            decide(&[admin], Some(1), target(Some(8), None), A::TenantRead),
            Verdict::OutOfScope
        );
        assert_eq!(
            decide(&[admin], Some(1), target(None, None), A::TenantCreate),
            Verdict::Denied
        );
        assert_eq!(
            decide(&[admin], Some(2), target(Some(7), None), A::TenantRead),
            Verdict::OutOfScope
        );
        assert_eq!(
            decide(
                &[ns_admin],
                Some(1),
                target(Some(7), Some(3)),
                A::ApiKeyCreate
            ),
            Verdict::Denied
        );
        assert_eq!(
            decide(
                &[ns_admin],
                Some(1),
                target(Some(7), Some(2)),
                A::ApiKeyCreate
            ),
            Verdict::Allowed
        );
        let grant = |text: &str| text.parse::<Binding>().unwrap();
        assert!(may_grant(
            &[admin],
            1,
            grant("agent@namespace:7/1"),
            A::RoleBindingGrant
        ));
        assert!(may_grant(
            &[admin],
            1,
            grant("tenant_admin@tenant:7"),
            A::RoleBindingGrant
        ));
        assert!(!may_grant(
            &[admin],
            1,
            grant("org_owner@organisation:1"),
            A::RoleBindingGrant
        ));
        assert!(!may_grant(
            &[admin],
            1,
            grant("agent@tenant:8"),
            A::RoleBindingGrant
        ));
        assert!(!may_grant(
            &[ns_admin],
            1,
            grant("tenant_admin@tenant:7"),
            A::RoleBindingGrant
        ));
        assert!(!may_grant(
            &[ns_admin],
            1,
            grant("agent@namespace:7/3"),
            A::RoleBindingGrant
        ));
    }

    #[test]
    fn roles_are_ordered_by_what_they_may_do() {
        // Each role may do at least what the next narrower role of its line may do.
        for (wider, narrower) in [
            (Role::OrgOwner, Role::TenantAdmin),
            (Role::TenantAdmin, Role::NamespaceAdmin),
            (Role::NamespaceAdmin, Role::Operator),
            (Role::Operator, Role::Agent),
            (Role::Operator, Role::Auditor),
            (Role::Agent, Role::Viewer),
            (Role::Auditor, Role::Viewer),
        ] {
            for tool in Action::ALL {
                assert!(
                    !narrower.allows_tool(tool) || wider.allows_tool(tool),
                    "{wider} {tool:?}"
                );
            }
        }
        assert!(!Role::Viewer.allows_tool(Action::ScenarioNext));
        assert!(!Role::Agent.allows_tool(Action::ScenarioDefine));
        assert!(!Role::Auditor.allows_tool(Action::ScenarioTrigger));
        assert!(!Role::Operator.allows_admin(AdminAction::ApiKeyCreate));
        assert!(Role::NamespaceAdmin.allows_admin(AdminAction::ApiKeyCreate));
        assert!(!Role::TenantAdmin.allows_admin(AdminAction::TenantDelete));
    }
}
