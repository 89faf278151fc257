//! Identity on the running enterprise server: API keys from `bootstrap` and `keys` (created,
//! refused when forged, revoked, expired and rotated across two replicas on one database), and
//! the permission matrix, every tool × every role × {own namespace, another namespace of the
//! own tenant, a tenant of another organisation}, against an expectation written here
//! independently of the server's code.

use std::time::{Duration, Instant};

use decision_gate_core::Action;
use serde_json::{Value, json};

use crate::isolation::auth;
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, error_kind, logical,
    migrate_and_provision, ok, run, run_json, start_args,
};

/// Tenant 3 in organisation 2 (with a second namespace in tenant 1, made by [`tenancy`]).
const MORE_TENANCY: &str = r#"
[[tenancy.organisations]]
organisation_id = 2
name = "globex"

[[tenancy.tenants]]
tenant_id = 3
organisation_id = 2
name = "tenant c"
namespaces = [{ namespace_id = 1, name = "default" }]
"#;

/// A migrated database with organisation 1 (tenants 1 and 2; tenant 1 with namespaces 1 and 2)
/// and organisation 2 (tenant 3), configured with `rest`.
pub(crate) fn tenancy(rest: &str) -> (ScratchDb, ConfigDir) {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &format!("{rest}{MORE_TENANCY}")));
    migrate_and_provision(&dir);
    // A second namespace of tenant 1 (the owner bypasses row-level security).
    db.exec(&["INSERT INTO namespaces (tenant_id, namespace_id, name) VALUES (1, 2, 'second')"]);
    (db, dir)
}

fn setup() -> (ScratchDb, ConfigDir) {
    tenancy(&auth())
}

fn file(dir: &ConfigDir) -> String {
    dir.file().to_str().expect("utf-8 path").to_owned()
}

/// `bootstrap` for organisation `org`: the owner key.
fn bootstrap(dir: &ConfigDir, org: i64) -> String {
    let (code, doc) = run_json(&[
        "bootstrap",
        "--json",
        "--config",
        &file(dir),
        "--organisation",
        &org.to_string(),
        "--name",
        "org",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    doc["key"].as_str().expect("key").to_owned()
}

/// `keys create` with `args` after the configuration: the key and its id.
fn create_key(dir: &ConfigDir, args: &[&str]) -> (String, String) {
    let config = file(dir);
    let mut all = vec!["keys", "create", "--json", "--config", &config];
    all.extend_from_slice(args);
    let (code, doc) = run_json(&all);
    assert_eq!(code, Some(0), "{args:?}: {doc}");
    (
        doc["key"].as_str().expect("key").to_owned(),
        doc["record"]["key_id"].as_str().expect("id").to_owned(),
    )
}

/// The HTTP status of one `scenarios_list` call in tenant 1 as the bearer of `token`.
fn status(server: &Enterprise, token: &str) -> u16 {
    reqwest::blocking::Client::new()
        .post(server.url("/mcp"))
        .timeout(Duration::from_secs(30))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "scenarios_list",
                              "arguments": {"tenant_id": 1, "namespace_id": 1}}})
            .to_string(),
        )
        .send()
        .expect("request")
        .status()
        .as_u16()
}

/// Waits until `token` is refused (401) on `server`; how long that took.
fn refused_within(server: &Enterprise, token: &str, limit: Duration) -> Duration {
    let began = Instant::now();
    loop {
        if status(server, token) == 401 {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < limit,
            "the key is still accepted after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn api_keys_are_issued_once_refused_when_forged_and_revoked_on_every_replica_within_a_second() {
    let (db, dir) = setup();
    let owner = bootstrap(&dir, 1);
    assert!(owner.starts_with("dg_"), "{owner}");
    // A second bootstrap of the same organisation is refused: it has an owner.
    let out = run(&[
        "bootstrap",
        "--config",
        &file(&dir),
        "--organisation",
        "1",
        "--name",
        "org",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists already"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Only the keyed hash is stored: the secret is nowhere in the database.
    let secret = owner.rsplit('_').next().expect("secret");
    let stored = db.strings("SELECT row_to_json(k)::text FROM api_keys k");
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(secret), "{}", stored[0]);

    let one = Enterprise::start(&dir);
    let two = Enterprise::start(&dir);
    // The owner reaches every tenant of its organisation.
    let mut spec = cycle();
    spec["default_tenant_id"] = json!(2);
    ok(&one.call(Some(&owner), "scenario_define", json!({ "spec": spec })));

    // Forged keys: a changed secret, an unknown id, a malformed one.
    let mut forged = owner.clone();
    let last = forged.pop().expect("a character");
    forged.push(if last == '0' { '1' } else { '0' });
    let unknown = format!("dg_0123456789abcdef_{}", &owner[20..]);
    for bad in [forged.as_str(), unknown.as_str(), "dg_short", "dg_"] {
        assert_eq!(status(&one, bad), 401, "{bad}");
    }
    let refusals = db.strings(
        "SELECT event_json FROM deployment_audit_events WHERE event_json LIKE '%unauthenticated%'",
    );
    assert!(
        refusals.len() >= 4,
        "every refusal is audited: {refusals:?}"
    );
    assert!(
        refusals.iter().all(|e| !e.contains(secret)),
        "the trail never holds a secret"
    );

    // Revocation: both replicas have the key in their cache, then refuse it within a second.
    let (agent, agent_id) = create_key(
        &dir,
        &[
            "--organisation",
            "1",
            "--tenant",
            "1",
            "--role",
            "agent",
            "--name",
            "bot",
        ],
    );
    assert_eq!(status(&one, &agent), 200);
    assert_eq!(status(&two, &agent), 200);
    let out = run(&["keys", "revoke", "--config", &file(&dir), &agent_id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let limit = Duration::from_secs(1);
    refused_within(&one, &agent, limit);
    refused_within(&two, &agent, limit);
    // Each change made from the command line is in the trail.
    let changes = db.strings(
        "SELECT event_json::json->>'action' FROM deployment_audit_events
          WHERE event_json::json->>'kind' = 'admin' ORDER BY event_id",
    );
    assert_eq!(
        changes,
        ["bootstrap", "api_key_create", "api_key_revoke"],
        "{changes:?}"
    );

    // Expiry: a key made to last one second is refused on both replicas a second after.
    let (brief, _) = create_key(
        &dir,
        &[
            "--organisation",
            "1",
            "--tenant",
            "1",
            "--role",
            "viewer",
            "--name",
            "brief",
            "--expires-in-s",
            "1",
        ],
    );
    assert_eq!(status(&two, &brief), 200);
    std::thread::sleep(Duration::from_secs(1));
    refused_within(&one, &brief, limit);
    refused_within(&two, &brief, limit);

    // Rotation: the old key keeps working for the overlap beside the new one, then stops.
    let (old, old_id) = create_key(
        &dir,
        &[
            "--organisation",
            "1",
            "--tenant",
            "1",
            "--role",
            "operator",
            "--name",
            "ci",
        ],
    );
    assert_eq!(status(&one, &old), 200);
    let (code, doc) = run_json(&[
        "keys",
        "rotate",
        "--json",
        "--config",
        &file(&dir),
        &old_id,
        "--overlap-s",
        "2",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    let new = doc["key"].as_str().expect("new key").to_owned();
    assert_eq!(doc["record"]["replaces"], json!(old_id));
    assert_eq!(doc["record"]["roles"], json!(["operator"]));
    assert_eq!(status(&one, &new), 200);
    assert_eq!(
        status(&two, &old),
        200,
        "the old key works during the overlap"
    );
    std::thread::sleep(Duration::from_secs(2));
    refused_within(&two, &old, limit);
    assert_eq!(status(&two, &new), 200);

    // The list shows every key's state, never a secret or a hash.
    let (code, doc) = run_json(&[
        "keys",
        "list",
        "--json",
        "--config",
        &file(&dir),
        "--organisation",
        "1",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    let keys = doc["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 5, "{doc}");
    let listed = doc.to_string();
    assert!(
        !listed.contains(secret) && !listed.contains("secret_hash"),
        "{listed}"
    );
    let usable: Vec<bool> = keys
        .iter()
        .map(|k| k["usable"].as_bool().expect("usable"))
        .collect();
    assert_eq!(
        usable.iter().filter(|u| **u).count(),
        2,
        "the owner and the rotated key: {doc}"
    );
}

#[test]
fn keys_that_cannot_be_are_refused_by_name() {
    let (_db, dir) = setup();
    let config = file(&dir);
    for (args, needle) in [
        (
            vec!["--organisation", "1", "--role", "root", "--name", "x"],
            "unknown role",
        ),
        (
            vec![
                "--organisation",
                "1",
                "--tenant",
                "1",
                "--role",
                "org_owner",
                "--name",
                "x",
            ],
            "org_owner can be bound to an organisation",
        ),
        (
            vec![
                "--organisation",
                "2",
                "--tenant",
                "1",
                "--role",
                "agent",
                "--name",
                "x",
            ],
            "does not exist",
        ),
        (
            vec![
                "--organisation",
                "1",
                "--tenant",
                "1",
                "--namespace",
                "9",
                "--role",
                "agent",
                "--name",
                "x",
            ],
            "namespace",
        ),
        (
            vec![
                "--organisation",
                "1",
                "--role",
                "agent",
                "--name",
                "x",
                "--expires-in-s",
                "0",
            ],
            "expires_in_s",
        ),
    ] {
        let mut all = vec!["keys", "create", "--config", config.as_str()];
        all.extend(args.iter().copied());
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Who may run each tool, written independently of the server's matrix: `(tool, roles)`.
const EXPECTED: &[(&str, &[&str])] = &[
    (
        "scenario_define",
        &["org_owner", "tenant_admin", "namespace_admin", "operator"],
    ),
    (
        "scenario_start",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
    ("scenario_status", &["*"]),
    (
        "scenario_next",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
    (
        "scenario_submit",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
    (
        "scenario_trigger",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
    (
        "evidence_query",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
    (
        "runpack_export",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "auditor",
        ],
    ),
    (
        "runpack_verify",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "auditor",
        ],
    ),
    ("providers_list", &["*"]),
    ("provider_contract_get", &["*"]),
    ("provider_check_schema_get", &["*"]),
    (
        "schemas_register",
        &["org_owner", "tenant_admin", "namespace_admin", "operator"],
    ),
    ("schemas_list", &["*"]),
    ("schemas_get", &["*"]),
    ("scenarios_list", &["*"]),
    (
        "precheck",
        &[
            "org_owner",
            "tenant_admin",
            "namespace_admin",
            "operator",
            "agent",
        ],
    ),
];

const ROLES: [&str; 7] = [
    "org_owner",
    "tenant_admin",
    "namespace_admin",
    "operator",
    "agent",
    "auditor",
    "viewer",
];

/// Where a matrix call is aimed, relative to a key bound in namespace 1/1 (or its tenant or
/// organisation, for the roles bound no narrower).
#[derive(Clone, Copy, Debug)]
enum Target {
    OwnNamespace,
    OtherNamespace,
    OtherTenant,
}

impl Target {
    fn ids(self) -> (u64, u64) {
        match self {
            Self::OwnNamespace => (1, 1),
            Self::OtherNamespace => (1, 2),
            Self::OtherTenant => (3, 1),
        }
    }
}

/// What each namespace holds before the matrix runs: the scenario, a data shape and an export,
/// whose id is kept by namespace.
struct Prepared {
    exports: Vec<((u64, u64), String)>,
}

impl Prepared {
    fn export_id(&self, at: (u64, u64)) -> &str {
        &self
            .exports
            .iter()
            .find(|(ns, _)| *ns == at)
            .expect("an export")
            .1
    }
}

/// The arguments of `tool` aimed at `(tenant, namespace)`, with ids unique to `tag`; calls
/// that need a fresh run get one started by `owner` first.
fn arguments(
    tool: &str,
    (tenant, namespace): (u64, u64),
    tag: &str,
    prepared: &Prepared,
    fresh_run: &dyn Fn() -> String,
) -> Value {
    let run =
        |run_id: &str| json!({ "run_id": run_id, "tenant_id": tenant, "namespace_id": namespace });
    match tool {
        "scenario_define" => {
            let mut spec = cycle();
            spec["scenario_id"] = json!(format!("def-{tag}"));
            spec["default_tenant_id"] = json!(tenant);
            spec["namespace_id"] = json!(namespace);
            json!({ "spec": spec })
        }
        "scenario_start" => json!({ "scenario_id": "cycle", "started_at": logical(0),
            "run_config": { "tenant_id": tenant, "namespace_id": namespace, "run_id": format!("start-{tag}") } }),
        "scenario_status" => json!({ "scenario_id": "cycle", "request": run("base") }),
        "scenario_next" => {
            let mut r = run(&fresh_run());
            r["trigger_id"] = json!(format!("next-{tag}"));
            r["agent_id"] = json!("agent");
            r["time"] = logical(1);
            json!({ "scenario_id": "cycle", "request": r })
        }
        "scenario_submit" => {
            let mut r = run(&fresh_run());
            r["submission_id"] = json!(format!("sub-{tag}"));
            r["payload"] = json!({ "kind": "json", "value": { "x": 1 } });
            r["content_type"] = json!("application/json");
            r["submitted_at"] = logical(1);
            json!({ "scenario_id": "cycle", "request": r })
        }
        "scenario_trigger" => {
            let mut r = run(&fresh_run());
            r["trigger_id"] = json!(format!("trig-{tag}"));
            r["kind"] = json!("tick");
            r["time"] = logical(1);
            r["source_id"] = json!("scheduler");
            json!({ "scenario_id": "cycle", "trigger": r })
        }
        "evidence_query" => {
            let mut context = run("base");
            context["scenario_id"] = json!("cycle");
            context["stage_id"] = json!("plan");
            context["trigger_id"] = json!(format!("q-{tag}"));
            context["trigger_time"] = logical(1);
            json!({ "query": { "provider_id": "time", "check_id": "after", "params": { "timestamp": 0 } },
                    "context": context })
        }
        "runpack_export" => json!({ "tenant_id": tenant, "namespace_id": namespace,
            "scenario_id": "cycle", "run_id": "base", "generated_at": logical(9) }),
        "runpack_verify" => json!({ "tenant_id": tenant, "namespace_id": namespace,
            "run_id": "base", "export_id": prepared.export_id((tenant, namespace)) }),
        "providers_list" => json!({}),
        "provider_contract_get" => json!({ "provider_id": "time" }),
        "provider_check_schema_get" => json!({ "provider_id": "time", "check_id": "after" }),
        "schemas_register" => json!({ "record": { "tenant_id": tenant, "namespace_id": namespace,
            "schema_id": format!("s-{tag}"), "version": "v1", "schema": { "type": "object" },
            "created_at": logical(0) } }),
        "schemas_list" | "scenarios_list" => {
            json!({ "tenant_id": tenant, "namespace_id": namespace })
        }
        "schemas_get" => json!({ "tenant_id": tenant, "namespace_id": namespace,
            "schema_id": "claim", "version": "v1" }),
        "precheck" => {
            json!({ "tenant_id": tenant, "namespace_id": namespace, "scenario_id": "cycle",
            "stage_id": "plan", "data_shape": { "schema_id": "claim", "version": "v1" },
            "payload": { "started": true } })
        }
        other => panic!("the matrix test has no arguments for tool {other}: add them"),
    }
}

/// Tools that name no tenant: they act in the key's home scope, so only the own target applies.
const HOME_SCOPED: [&str; 3] = [
    "providers_list",
    "provider_contract_get",
    "provider_check_schema_get",
];

#[test]
fn every_tool_for_every_role_in_every_scope_is_allowed_denied_or_not_found_as_the_matrix_says() {
    let (_db, dir) = setup();
    let owner1 = bootstrap(&dir, 1);
    let owner2 = bootstrap(&dir, 2);
    let server = Enterprise::start(&dir);

    // Every namespace gets the scenario, a run `base` with a decision, a data shape, an export.
    let mut exports = Vec::new();
    for (tenant, namespace, owner) in [(1, 1, &owner1), (1, 2, &owner1), (3, 1, &owner2)] {
        let o = Some(owner.as_str());
        let mut spec = cycle();
        spec["default_tenant_id"] = json!(tenant);
        spec["namespace_id"] = json!(namespace);
        ok(&server.call(o, "scenario_define", json!({ "spec": spec })));
        let mut start = start_args(tenant, "base");
        start["run_config"]["namespace_id"] = json!(namespace);
        ok(&server.call(o, "scenario_start", start));
        ok(&server.call(
            o,
            "schemas_register",
            json!({ "record": { "tenant_id": tenant, "namespace_id": namespace, "schema_id": "claim",
                                "version": "v1", "schema": { "type": "object" }, "created_at": logical(0) } }),
        ));
        let export = server.call(
            o,
            "runpack_export",
            json!({ "tenant_id": tenant, "namespace_id": namespace, "scenario_id": "cycle",
                    "run_id": "base", "generated_at": logical(2) }),
        );
        let export_id = ok(&export)["export_id"]
            .as_str()
            .expect("export id")
            .to_owned();
        exports.push(((tenant, namespace), export_id));
    }
    let prepared = Prepared { exports };

    // One key per role, bound as narrowly as the role can be: namespace 1/1, else tenant 1,
    // else organisation 1.
    let keys: Vec<(&str, String)> = ROLES
        .iter()
        .map(|role| {
            let scope: &[&str] = match *role {
                "org_owner" => &[],
                "tenant_admin" => &["--tenant", "1"],
                _ => &["--tenant", "1", "--namespace", "1"],
            };
            let mut args = vec!["--organisation", "1", "--role", role, "--name", role];
            args.extend_from_slice(scope);
            (*role, create_key(&dir, &args).0)
        })
        .collect();

    // Every tool of the server has a row here: a new tool without one fails the test.
    for action in Action::ALL {
        assert!(
            EXPECTED.iter().any(|(tool, _)| *tool == action.name()),
            "tool {} has no row in the expected matrix",
            action.name()
        );
    }
    let mut counter = 0u32;
    let mut checked = 0u32;
    for (tool, allowed) in EXPECTED {
        for (role, key) in &keys {
            for target in [
                Target::OwnNamespace,
                Target::OtherNamespace,
                Target::OtherTenant,
            ] {
                if HOME_SCOPED.contains(tool) && !matches!(target, Target::OwnNamespace) {
                    continue;
                }
                counter += 1;
                let tag = format!("{role}-{counter}");
                let (tenant, namespace) = target.ids();
                let fresh_run = || {
                    let id = format!("fresh-{tag}");
                    let mut start = start_args(tenant, &id);
                    start["run_config"]["namespace_id"] = json!(namespace);
                    let owner = if tenant == 3 { &owner2 } else { &owner1 };
                    ok(&server.call(Some(owner), "scenario_start", start));
                    id
                };
                let args = arguments(tool, target.ids(), &tag, &prepared, &fresh_run);
                let may = allowed.contains(&"*") || allowed.contains(role);
                let wide = matches!(*role, "org_owner" | "tenant_admin");
                let expected = match target {
                    Target::OtherTenant => Some("not_found"),
                    Target::OtherNamespace if !wide => Some("permission_denied"),
                    _ if may => None,
                    _ => Some("permission_denied"),
                };
                let result = server.call(Some(key), tool, args);
                assert_eq!(
                    error_kind(&result).as_deref(),
                    expected,
                    "{tool} as {role} in {target:?}: {result}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, (17 - 3) * 7 * 3 + 3 * 7, "every cell was checked");

    // Another organisation's tenant answers exactly as a tenant that does not exist.
    let viewer = &keys
        .iter()
        .find(|(r, _)| *r == "org_owner")
        .expect("owner")
        .1;
    let status = |tenant: u64| {
        server.call(
            Some(viewer),
            "scenario_status",
            json!({ "scenario_id": "cycle", "request": { "run_id": "base", "tenant_id": tenant, "namespace_id": 1 } }),
        )
    };
    let foreign = status(3).to_string();
    let missing = status(99).to_string();
    assert_eq!(foreign.replace("99", "3"), missing.replace("99", "3"));
}
