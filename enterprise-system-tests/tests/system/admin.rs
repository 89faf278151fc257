//! The admin API on the running enterprise server: every administrative action × every role ×
//! {own namespace, another namespace of the own tenant, another organisation's tenant} against
//! an expectation written here; step-up refused without MFA, with a stale authentication and
//! for API keys; nobody grants more than they hold; problem+json errors, cursor pages and the
//! OpenAPI document; a change made through one replica seen by another.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::identity::tenancy;
use crate::oidc_provider::{AUDIENCE, OidcProvider};
use crate::support::{ConfigDir, Enterprise, ScratchDb, run_json};

const ROLES: [&str; 7] = [
    "org_owner",
    "tenant_admin",
    "namespace_admin",
    "operator",
    "agent",
    "auditor",
    "viewer",
];

/// Each role's user is `u-<role>` in group `r-<role>`; the rules bind the role as narrowly as
/// it can be bound: organisation 1, tenant 1, else namespace 1/1. `owner2` owns organisation 2.
fn groups() -> Value {
    let mut map = serde_json::Map::new();
    for role in ROLES {
        map.insert(format!("u-{role}"), json!([format!("r-{role}")]));
    }
    map.insert("owner2".into(), json!(["r-owner2"]));
    Value::Object(map)
}

fn rules(issuer: &str) -> String {
    let mut out = format!(
        r#"
[identity]
resource = "{AUDIENCE}"
step_up_max_age_s = 300

[[identity.issuers]]
issuer = "{issuer}"
organisation_id = 1
mfa_acr = ["urn:decision-gate:mfa"]
"#
    );
    for role in ROLES {
        let scope = match role {
            "org_owner" => "organisation:1".to_owned(),
            "tenant_admin" => "tenant:1".to_owned(),
            _ => "namespace:1/1".to_owned(),
        };
        out.push_str(&format!(
            "\n[[identity.issuers.rules]]\nclaim = \"groups\"\nequals = \"r-{role}\"\ngrant = [\"{role}@{scope}\"]\n"
        ));
    }
    out
}

/// The database, the configuration and a server; organisation 2's owner is an API key (one
/// identity provider speaks for one organisation).
fn setup(provider: &OidcProvider) -> (ScratchDb, ConfigDir, Enterprise) {
    let (db, dir) = tenancy(&rules(&provider.issuer));
    // Organisation 2's owner key; it also creates the API-key pepper, which a server reads
    // when it starts.
    let file = dir.file().to_str().expect("utf-8").to_owned();
    let (code, doc) = run_json(&[
        "bootstrap",
        "--json",
        "--config",
        &file,
        "--organisation",
        "2",
        "--name",
        "globex",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    let server = Enterprise::start(&dir);
    (db, dir, server)
}

/// One admin request: status, body (JSON, or null), and the `WWW-Authenticate` header.
fn admin(
    server: &Enterprise,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, Option<String>, String) {
    let client = reqwest::blocking::Client::new();
    let url = server.url(path);
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        other => panic!("method {other}"),
    }
    .timeout(Duration::from_secs(30))
    .header("authorization", format!("Bearer {token}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let answer = request.send().expect("admin request");
    let status = answer.status().as_u16();
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = answer.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, challenge, content_type)
}

/// How far an action reaches: an organisation, a tenant, or a namespace.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Organisation,
    Tenant,
    Namespace,
}

/// Who may perform each action (written independently of the server's matrix), at which level
/// it acts. Rows that destroy what later rows use come last.
const EXPECTED: &[(&str, Level, &[&str])] = &[
    ("whoami", Level::Organisation, &["*"]),
    ("organisation_read", Level::Organisation, &["*"]),
    ("tenant_create", Level::Organisation, &["org_owner"]),
    ("tenant_read", Level::Tenant, &["*"]),
    ("tenant_suspend", Level::Tenant, &["org_owner"]),
    (
        "namespace_create",
        Level::Tenant,
        &["org_owner", "tenant_admin"],
    ),
    ("namespace_read", Level::Tenant, &["*"]),
    (
        "namespace_suspend",
        Level::Namespace,
        &["org_owner", "tenant_admin"],
    ),
    (
        "role_binding_list",
        Level::Tenant,
        &["org_owner", "tenant_admin", "namespace_admin", "auditor"],
    ),
    (
        "role_binding_grant",
        Level::Namespace,
        &["org_owner", "tenant_admin", "namespace_admin"],
    ),
    (
        "role_binding_revoke",
        Level::Namespace,
        &["org_owner", "tenant_admin", "namespace_admin"],
    ),
    (
        "api_key_create",
        Level::Namespace,
        &["org_owner", "tenant_admin", "namespace_admin"],
    ),
    (
        "api_key_list",
        Level::Tenant,
        &["org_owner", "tenant_admin", "namespace_admin", "auditor"],
    ),
    (
        "api_key_rotate",
        Level::Namespace,
        &["org_owner", "tenant_admin", "namespace_admin"],
    ),
    (
        "api_key_revoke",
        Level::Namespace,
        &["org_owner", "tenant_admin", "namespace_admin"],
    ),
    (
        "identity_provider_read",
        Level::Organisation,
        &["org_owner", "tenant_admin", "auditor"],
    ),
    (
        "namespace_delete",
        Level::Namespace,
        &["org_owner", "tenant_admin"],
    ),
    ("tenant_delete", Level::Tenant, &["org_owner"]),
    ("organisation_suspend", Level::Organisation, &["org_owner"]),
    ("organisation_delete", Level::Organisation, &["org_owner"]),
];

/// Administrative actions the admin API does not serve yet, each with the reason.
const NOT_SERVED: &[(&str, &str)] = &[
    (
        "identity_provider_write",
        "issuers are configured in [[identity.issuers]]",
    ),
    (
        "audit_read",
        "the audit query API comes with the audit chain",
    ),
    ("usage_read", "the usage API comes with the usage ledger"),
];

#[derive(Clone, Copy, Debug)]
enum Where {
    OwnNamespace,
    OtherNamespace,
    OtherTenant,
}

impl Where {
    /// (organisation, tenant, namespace)
    fn ids(self) -> (i64, u64, u64) {
        match self {
            Self::OwnNamespace => (1, 1, 1),
            Self::OtherNamespace => (1, 1, 2),
            Self::OtherTenant => (2, 3, 1),
        }
    }
}

/// Which (tenant, namespace) a role's binding covers: `None` for all of the organisation or
/// tenant (org_owner, tenant_admin bound at tenant 1).
fn covers(role: &str, level: Level, at: Where) -> bool {
    let (org, tenant, namespace) = at.ids();
    match role {
        "org_owner" => org == 1,
        "tenant_admin" => level != Level::Organisation && tenant == 1,
        _ => level == Level::Namespace && (tenant, namespace) == (1, 1),
    }
}

#[test]
fn every_admin_action_for_every_role_in_every_scope_is_allowed_denied_or_not_found() {
    let provider = OidcProvider::start(&groups());
    let (_db, dir, server) = setup(&provider);
    let file = dir.file().to_str().expect("utf-8").to_owned();
    // Organisation 2's owner, and the keys and bindings the revoke and rotate cells act on.
    let key_in = |at: Where, n: usize| -> String {
        let (org, tenant, namespace) = at.ids();
        let (code, doc) = run_json(&[
            "keys",
            "create",
            "--json",
            "--config",
            &file,
            "--organisation",
            &org.to_string(),
            "--tenant",
            &tenant.to_string(),
            "--namespace",
            &namespace.to_string(),
            "--role",
            "viewer",
            "--name",
            &format!("cell-{n}"),
        ]);
        assert_eq!(code, Some(0), "{doc}");
        doc["record"]["key_id"].as_str().expect("id").to_owned()
    };
    // One token per role (with MFA, fresh: the step-up is met, so each cell tests the matrix).
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|role| (*role, provider.user_token(&format!("u-{role}"), true)))
        .collect();
    let owner1 = tokens[0].1.clone();

    for action in decision_gate_enterprise::rbac::AdminAction::ALL {
        let name = action.name();
        assert!(
            EXPECTED.iter().any(|(a, ..)| *a == name) || NOT_SERVED.iter().any(|(a, _)| *a == name),
            "admin action {name} has no row in the expected matrix"
        );
    }

    let mut counter = 0u32;
    for (action, level, allowed) in EXPECTED {
        for (role, bearer) in &tokens {
            let role = *role;
            for at in [
                Where::OwnNamespace,
                Where::OtherNamespace,
                Where::OtherTenant,
            ] {
                if *level != Level::Namespace && matches!(at, Where::OtherNamespace) {
                    continue; // an organisation or tenant action has no namespace to vary
                }
                if *action == "whoami" && !matches!(at, Where::OwnNamespace) {
                    continue;
                }
                counter += 1;
                let (org, tenant, namespace) = at.ids();
                // A binding for a revoke cell to act on. Organisation 2's owner is an API key,
                // which may not grant: there, a made-up id answers 404 like any binding outside
                // the caller's organisation.
                let setup_grant = |subject: String| -> Option<i64> {
                    if org != 1 {
                        return None;
                    }
                    let (status, body, ..) = admin(
                        &server,
                        &owner1,
                        "POST",
                        &format!("/admin/v1/organisations/{org}/role-bindings"),
                        Some(
                            json!({ "issuer": "https://idp.test", "subject": subject, "role": "viewer",
                                     "tenant_id": tenant, "namespace_id": namespace }),
                        ),
                    );
                    assert_eq!(status, 201, "{body}");
                    body["binding_id"].as_i64()
                };
                let (method, path, body): (&str, String, Option<Value>) = match *action {
                    "whoami" => ("GET", "/admin/v1/whoami".into(), None),
                    "organisation_read" => ("GET", format!("/admin/v1/organisations/{org}"), None),
                    "organisation_suspend" => (
                        "POST",
                        format!("/admin/v1/organisations/{org}/state"),
                        Some(json!({ "state": "active" })),
                    ),
                    "organisation_delete" => {
                        ("DELETE", format!("/admin/v1/organisations/{org}"), None)
                    }
                    "tenant_create" => (
                        "POST",
                        format!("/admin/v1/organisations/{org}/tenants"),
                        Some(json!({ "id": 100 + counter, "name": "new" })),
                    ),
                    "tenant_read" => ("GET", format!("/admin/v1/tenants/{tenant}"), None),
                    "tenant_suspend" => (
                        "POST",
                        format!("/admin/v1/tenants/{tenant}/state"),
                        Some(json!({ "state": "active" })),
                    ),
                    "tenant_delete" => ("DELETE", format!("/admin/v1/tenants/{tenant}"), None),
                    "namespace_create" => (
                        "POST",
                        format!("/admin/v1/tenants/{tenant}/namespaces"),
                        Some(json!({ "id": 100 + counter, "name": "new" })),
                    ),
                    "namespace_read" => (
                        "GET",
                        format!("/admin/v1/tenants/{tenant}/namespaces"),
                        None,
                    ),
                    "namespace_suspend" => (
                        "POST",
                        format!("/admin/v1/tenants/{tenant}/namespaces/{namespace}/state"),
                        Some(json!({ "state": "active" })),
                    ),
                    "namespace_delete" => (
                        "DELETE",
                        format!("/admin/v1/tenants/{tenant}/namespaces/{namespace}"),
                        None,
                    ),
                    "role_binding_list" => (
                        "GET",
                        format!("/admin/v1/organisations/{org}/role-bindings?tenant_id={tenant}"),
                        None,
                    ),
                    "role_binding_grant" => (
                        "POST",
                        format!("/admin/v1/organisations/{org}/role-bindings"),
                        Some(
                            json!({ "issuer": "https://idp.test", "subject": format!("s-{counter}"),
                                     "role": "viewer", "tenant_id": tenant, "namespace_id": namespace }),
                        ),
                    ),
                    "role_binding_revoke" => {
                        let id = setup_grant(format!("r-{counter}")).unwrap_or(999_999);
                        ("DELETE", format!("/admin/v1/role-bindings/{id}"), None)
                    }
                    "api_key_create" => (
                        "POST",
                        format!("/admin/v1/organisations/{org}/api-keys"),
                        Some(
                            json!({ "name": "made", "roles": ["viewer"], "tenant_id": tenant,
                                     "namespace_id": namespace }),
                        ),
                    ),
                    "api_key_list" => (
                        "GET",
                        format!("/admin/v1/organisations/{org}/api-keys?tenant_id={tenant}"),
                        None,
                    ),
                    "api_key_rotate" => (
                        "POST",
                        format!("/admin/v1/api-keys/{}/rotate", key_in(at, counter as usize)),
                        None,
                    ),
                    "api_key_revoke" => (
                        "POST",
                        format!("/admin/v1/api-keys/{}/revoke", key_in(at, counter as usize)),
                        None,
                    ),
                    "identity_provider_read" => (
                        "GET",
                        format!("/admin/v1/organisations/{org}/identity-providers"),
                        None,
                    ),
                    other => panic!("the matrix test has no request for {other}: add one"),
                };
                let may = allowed.contains(&"*") || allowed.contains(&role);
                let expected = if *action == "whoami" {
                    200
                } else if org != 1 {
                    404
                } else if may && covers(role, *level, at) {
                    0 // any success
                } else {
                    403
                };
                let (status, answer, _, content_type) = admin(&server, bearer, method, &path, body);
                if expected == 0 {
                    assert!(
                        (200..300).contains(&status),
                        "{action} as {role} at {at:?}: expected success, got {status} {answer}"
                    );
                } else {
                    assert_eq!(status, expected, "{action} as {role} at {at:?}: {answer}");
                }
                if status >= 400 {
                    assert_eq!(content_type, "application/problem+json", "{action}");
                    assert_eq!(answer["status"], json!(status), "{answer}");
                    assert!(
                        answer["type"]
                            .as_str()
                            .is_some_and(|t| t.starts_with("urn:decision-gate:problem:")),
                        "{answer}"
                    );
                }
            }
        }
    }
    assert!(counter > 250, "every cell ran: {counter}");
}

#[test]
fn step_up_is_refused_without_mfa_with_a_stale_login_and_for_api_keys() {
    let provider = OidcProvider::start(&groups());
    let (_db, dir, server) = setup(&provider);
    let file = dir.file().to_str().expect("utf-8").to_owned();
    let (code, doc) = run_json(&[
        "bootstrap",
        "--json",
        "--config",
        &file,
        "--organisation",
        "1",
        "--name",
        "acme",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    let owner_key = doc["key"].as_str().expect("key").to_owned();
    let create = json!({ "name": "ci", "roles": ["agent"], "tenant_id": 1 });
    let path = "/admin/v1/organisations/1/api-keys";

    // An API key, even the organisation's owner key, never steps up.
    let (status, body, challenge, _) =
        admin(&server, &owner_key, "POST", path, Some(create.clone()));
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["type"], "urn:decision-gate:problem:step_up_required",
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("API keys"),
        "{body}"
    );
    let challenge = challenge.expect("a step-up challenge");
    assert!(
        challenge.contains(r#"error="insufficient_user_authentication""#),
        "{challenge}"
    );
    assert!(challenge.contains("max_age=300"), "{challenge}");
    // But it may do what needs no step-up.
    let (status, body, ..) = admin(
        &server,
        &owner_key,
        "POST",
        "/admin/v1/tenants/2/state",
        Some(json!({ "state": "active" })),
    );
    assert_eq!(status, 204, "{body}");

    // The owner without a second factor.
    let password_only = provider.user_token("u-org_owner", false);
    let (status, body, ..) = admin(&server, &password_only, "POST", path, Some(create.clone()));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("multi-factor"),
        "{body}"
    );
    // With MFA, but signed in ten minutes ago.
    provider.age_logins(600);
    let stale = provider.user_token("u-org_owner", true);
    let (status, body, ..) = admin(&server, &stale, "POST", path, Some(create.clone()));
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("older"),
        "{body}"
    );
    // With MFA, just now: created, and the key works at once.
    provider.age_logins(0);
    let fresh = provider.user_token("u-org_owner", true);
    let (status, body, ..) = admin(&server, &fresh, "POST", path, Some(create));
    assert_eq!(status, 201, "{body}");
    let key = body["key"].as_str().expect("the key, once").to_owned();
    let (status, me, ..) = admin(&server, &key, "GET", "/admin/v1/whoami", None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["roles"], json!(["agent@tenant:1"]), "{me}");
    assert_eq!(me["auth_method"], "api_key");
}

#[test]
fn nobody_grants_more_than_they_hold_and_lists_page_with_a_cursor() {
    let provider = OidcProvider::start(&groups());
    let (db, _dir, server) = setup(&provider);
    let tenant_admin = provider.user_token("u-tenant_admin", true);
    let ns_admin = provider.user_token("u-namespace_admin", true);
    let grant = |token: &str, role: &str, tenant: Option<u64>, namespace: Option<u64>| {
        admin(
            &server,
            token,
            "POST",
            "/admin/v1/organisations/1/role-bindings",
            Some(
                json!({ "issuer": provider.issuer, "subject": "carol", "role": role,
                         "tenant_id": tenant, "namespace_id": namespace }),
            ),
        )
    };
    // A tenant admin cannot make an organisation owner; another tenant is out of its reach.
    assert_eq!(grant(&tenant_admin, "org_owner", None, None).0, 403);
    assert_eq!(grant(&tenant_admin, "agent", Some(2), Some(1)).0, 404);
    // A namespace admin cannot make a tenant admin, nor act in the next namespace.
    assert_eq!(grant(&ns_admin, "tenant_admin", Some(1), None).0, 403);
    assert_eq!(grant(&ns_admin, "agent", Some(1), Some(2)).0, 403);
    let (status, made, ..) = grant(&ns_admin, "operator", Some(1), Some(1));
    assert_eq!(status, 201, "{made}");
    // The granted binding takes effect: carol's token now carries it.
    let carol = provider.user_token("carol", true);
    let (_, me, ..) = admin(&server, &carol, "GET", "/admin/v1/whoami", None);
    assert_eq!(me["roles"], json!(["operator@namespace:1/1"]), "{me}");
    let refusals = db.strings(
        "SELECT event_json FROM deployment_audit_events WHERE event_json LIKE '%role_binding_grant%'",
    );
    assert_eq!(
        refusals.len(),
        5,
        "four refusals and one grant, each recorded: {refusals:?}"
    );

    // Pages: tenants of organisation 1 one at a time, by cursor, each once.
    let owner = provider.user_token("u-org_owner", true);
    for id in 10..13 {
        let (status, body, ..) = admin(
            &server,
            &owner,
            "POST",
            "/admin/v1/organisations/1/tenants",
            Some(json!({ "id": id, "name": format!("t{id}") })),
        );
        assert_eq!(status, 201, "{body}");
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/organisations/1/tenants?limit=2&cursor={c}"),
            None => "/admin/v1/organisations/1/tenants?limit=2".to_owned(),
        };
        let (status, page, ..) = admin(&server, &owner, "GET", &path, None);
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|t| t["tenant_id"].as_u64().expect("id")),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 10, 11, 12]);
    // Text and list fields past their limits are refused by name, and recorded.
    let (status, body, ..) = admin(
        &server,
        &owner,
        "POST",
        "/admin/v1/organisations/1/role-bindings",
        Some(json!({ "issuer": provider.issuer, "subject": "s".repeat(1025), "role": "viewer" })),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("subject"),
        "{body}"
    );
    let (status, body, ..) = admin(
        &server,
        &owner,
        "POST",
        "/admin/v1/organisations/1/api-keys",
        Some(json!({ "name": "many", "roles": vec!["viewer"; 8], "tenant_id": 1 })),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("roles"),
        "{body}"
    );
    let invalid = db.strings(
        "SELECT count(*)::text FROM deployment_audit_events WHERE event_json LIKE '%invalid_input%'",
    );
    assert_eq!(invalid, ["2"], "both refusals are in the trail");
    let (status, body, ..) = admin(
        &server,
        &owner,
        "GET",
        "/admin/v1/organisations/1/tenants?limit=501",
        None,
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("limit"),
        "{body}"
    );
}

#[test]
fn the_openapi_document_describes_every_route_and_changes_reach_every_replica() {
    let provider = OidcProvider::start(&groups());
    let (_db, dir, one) = setup(&provider);
    let two = Enterprise::start(&dir);
    let doc: Value = reqwest::blocking::get(one.url("/admin/openapi.json"))
        .expect("openapi")
        .json()
        .expect("JSON");
    let paths: Vec<&String> = doc["paths"].as_object().expect("paths").keys().collect();
    for path in [
        "/admin/v1/whoami",
        "/admin/v1/organisations/{organisation_id}/tenants",
        "/admin/v1/tenants/{tenant_id}/namespaces/{namespace_id}/state",
        "/admin/v1/organisations/{organisation_id}/role-bindings",
        "/admin/v1/api-keys/{key_id}/rotate",
        "/admin/v1/organisations/{organisation_id}/identity-providers",
        "/admin/v1/tenants/{tenant_id}/usage",
    ] {
        assert!(
            paths.iter().any(|p| p.as_str() == path),
            "{path} missing from {paths:?}"
        );
    }
    assert_eq!(paths.len(), 16, "{paths:?}");

    // Suspending tenant 1 through one replica: the other refuses its calls within a second.
    let owner = provider.user_token("u-org_owner", true);
    let agent = provider.user_token("u-agent", false);
    let list = json!({ "tenant_id": 1, "namespace_id": 1 });
    assert!(two.call(Some(&agent), "scenarios_list", list.clone())["isError"] == json!(false));
    let (status, body, ..) = admin(
        &one,
        &owner,
        "POST",
        "/admin/v1/tenants/1/state",
        Some(json!({ "state": "suspended" })),
    );
    assert_eq!(status, 204, "{body}");
    let began = Instant::now();
    loop {
        let answer = two.call(Some(&agent), "scenarios_list", list.clone());
        if answer["structuredContent"]["error"]["kind"] == "permission_denied" {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "still served: {answer}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_identity_provider_set_through_the_api_is_trusted_on_every_replica_then_dropped() {
    let provider = OidcProvider::start(&groups());
    let other = OidcProvider::start(&json!({ "svc": ["robots"] }));
    let (_db, dir, one) = setup(&provider);
    let two = Enterprise::start(&dir);
    let robot = other.service_token();
    let list = json!({ "tenant_id": 1, "namespace_id": 1 });
    let status_on = |server: &Enterprise| {
        let url = server.url("/mcp");
        reqwest::blocking::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {robot}"))
            .body(
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "scenarios_list", "arguments": list}})
                .to_string(),
            )
            .send()
            .expect("call")
            .status()
            .as_u16()
    };
    assert_eq!(status_on(&two), 401, "not trusted yet");
    let settings = json!({ "issuer": other.issuer, "organisation_id": 1,
        "rules": [{ "claim": "groups", "equals": "robots", "grant": ["agent@namespace:1/1"] }] });
    let path = "/admin/v1/organisations/1/identity-providers";
    // Without a second factor, and from a tenant administrator: refused.
    let owner_pwd = provider.user_token("u-org_owner", false);
    assert_eq!(
        admin(&one, &owner_pwd, "PUT", path, Some(settings.clone())).0,
        403
    );
    let tenant_admin = provider.user_token("u-tenant_admin", true);
    assert_eq!(
        admin(&one, &tenant_admin, "PUT", path, Some(settings.clone())).0,
        403
    );
    // Settings that break a rule are refused by name.
    let owner = provider.user_token("u-org_owner", true);
    let (status, body, ..) = admin(
        &one,
        &owner,
        "PUT",
        path,
        Some(json!({ "issuer": other.issuer, "organisation_id": 1, "algorithms": ["HS256"] })),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("algorithms"),
        "{body}"
    );
    let (status, body, ..) = admin(&one, &owner, "PUT", path, Some(settings));
    assert_eq!(status, 204, "{body}");
    // Replica two trusts it within its half-second read of the stored providers (the loop
    // allows two seconds for a loaded machine), and lists it.
    let began = Instant::now();
    while status_on(&two) != 200 {
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "not trusted after two seconds"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, listed, ..) = admin(&two, &owner, "GET", path, None);
    let sources: Vec<&str> = listed
        .as_array()
        .expect("list")
        .iter()
        .map(|p| p["source"].as_str().expect("source"))
        .collect();
    assert_eq!(sources, ["configuration", "admin_api"], "{listed}");
    // Dropped: refused again on both replicas within a second (the stored providers' half
    // second plus a verified token's half second).
    let (status, body, ..) = admin(
        &one,
        &owner,
        "DELETE",
        &format!("{path}?issuer={}", other.issuer),
        None,
    );
    assert_eq!(status, 204, "{body}");
    let began = Instant::now();
    while status_on(&one) != 401 || status_on(&two) != 401 {
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "still trusted after two seconds"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_admin_api_passes_the_servers_admission_so_a_flood_of_bad_credentials_is_bounded() {
    let provider = OidcProvider::start(&groups());
    let (db, _dir, server) = setup(&provider);
    let count = || -> usize {
        db.strings(
            "SELECT count(*)::text FROM deployment_audit_events
              WHERE event_json::json->>'action' = 'admit'",
        )[0]
        .parse()
        .expect("count")
    };
    // 60 wrong keys from one address: the first ones are refused 401 and written one by one;
    // past the source's budget (server.limits.auth_failures, burst 20) they are 429 and counted
    // into the source's event of the window, not written each.
    let mut statuses = Vec::new();
    for n in 0..60 {
        let forged = format!("dg_{n:016x}_{}", "0".repeat(64));
        statuses.push(admin(&server, &forged, "GET", "/admin/v1/whoami", None).0);
    }
    assert_eq!(statuses[0], 401);
    assert!(statuses.contains(&429), "{statuses:?}");
    let written = count();
    assert!(
        (1..=21).contains(&written),
        "{written} refusals written one by one for 60 attempts"
    );
}
