//! One trail: on the enterprise binary every audit event (an authentication failure, a refused
//! call, a failed call, a successful call) and every usage event is a row in Postgres, exactly
//! one per call, and nothing of the trail is written to the replica's disk. Tenant state: a
//! suspended tenant is `permission_denied` (`tenant_suspended`), a deleted one `not_found`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, error_kind, migrate_and_provision,
    ok, sha256_hex, start_args,
};

const AGENT: &str = "trail-agent-token-0123456789";
const LISTER: &str = "trail-lister-token-0123456789";

fn auth() -> String {
    format!(
        r#"
[server.auth]
mode = "bearer"

[[server.auth.tokens]]
subject = "agent"
token_sha256 = "{}"
tenant_id = 1

[[server.auth.tokens]]
subject = "lister"
token_sha256 = "{}"
tenant_id = 1
tools = ["scenarios_list"]
"#,
        sha256_hex(AGENT),
        sha256_hex(LISTER)
    )
}

/// (tenant audit rows, deployment audit rows, usage rows).
fn counts(db: &ScratchDb) -> (usize, usize, usize) {
    let count = |table: &str| -> usize {
        db.strings(&format!("SELECT count(*)::text FROM {table}"))[0]
            .parse()
            .expect("a count")
    };
    (
        count("audit_events"),
        count("deployment_audit_events"),
        count("usage_events"),
    )
}

/// The newest tenant audit event, as JSON.
fn last_event(db: &ScratchDb) -> Value {
    let json = db.strings("SELECT event_json FROM audit_events ORDER BY event_id DESC LIMIT 1");
    serde_json::from_str(&json[0]).expect("event JSON")
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_call_leaves_exactly_one_audit_row_in_postgres_and_nothing_on_disk() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    ok(&server.call(Some(AGENT), "scenario_define", json!({ "spec": cycle() })));
    let base = counts(&db);

    // An authentication failure: a deployment event (it belongs to no tenant yet).
    let refused = reqwest::blocking::Client::new()
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", "Bearer not-a-token-at-all")
        .body(
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "scenarios_list", "arguments": {}}})
            .to_string(),
        )
        .send()
        .expect("request");
    assert_eq!(refused.status().as_u16(), 401);
    let after_auth = counts(&db);
    assert_eq!(
        after_auth,
        (base.0, base.1 + 1, base.2),
        "authentication failure"
    );
    let deployment =
        db.strings("SELECT event_json FROM deployment_audit_events ORDER BY event_id DESC LIMIT 1");
    let event: Value = serde_json::from_str(&deployment[0]).expect("event JSON");
    assert_eq!(event["refusal"], "unauthenticated", "{event}");
    assert!(
        !deployment[0].contains("not-a-token-at-all"),
        "the trail holds digests, never tokens"
    );

    // A refused call: permission denied in the caller's own tenant.
    let result = server.call(Some(LISTER), "scenario_start", start_args(1, "run-1"));
    assert_eq!(error_kind(&result).as_deref(), Some("permission_denied"));
    let after_refusal = counts(&db);
    assert_eq!(
        after_refusal,
        (after_auth.0 + 1, after_auth.1, after_auth.2),
        "refused call"
    );
    assert_eq!(last_event(&db)["outcome"]["kind"], "permission_denied");

    // A failed call: the run does not exist.
    let result = server.call(
        Some(AGENT),
        "scenario_status",
        json!({ "scenario_id": "cycle",
                "request": { "run_id": "no-such-run", "tenant_id": 1, "namespace_id": 1 } }),
    );
    assert_eq!(error_kind(&result).as_deref(), Some("not_found"));
    let after_failure = counts(&db);
    assert_eq!(
        after_failure,
        (after_refusal.0 + 1, after_refusal.1, after_refusal.2),
        "failed call"
    );
    assert_eq!(last_event(&db)["outcome"]["kind"], "not_found");

    // A successful call: one audit row and its usage, committed with the run.
    ok(&server.call(Some(AGENT), "scenario_start", start_args(1, "run-1")));
    let after_success = counts(&db);
    assert_eq!(after_success.0, after_failure.0 + 1, "successful call");
    assert_eq!(after_success.1, after_failure.1);
    assert_eq!(
        after_success.2,
        after_failure.2 + 2,
        "tool_calls and runs_started"
    );
    assert_eq!(last_event(&db)["outcome"]["result"], "success");

    // A successful read records its usage and audit through the Postgres meter and sink.
    ok(&server.call(
        Some(LISTER),
        "scenarios_list",
        json!({ "tenant_id": 1, "namespace_id": 1 }),
    ));
    let after_read = counts(&db);
    assert_eq!(
        after_read,
        (after_success.0 + 1, after_success.1, after_success.2 + 1),
        "successful read"
    );

    let on_disk = files(dir.dir.path());
    assert!(
        on_disk
            .iter()
            .all(|p| p.extension().is_none_or(|e| e != "jsonl")),
        "no audit file on the replica's disk: {on_disk:?}"
    );
    // The application role may append to the deployment stream but not read it.
    let denied = crate::support::block_on(async {
        use sqlx::Connection as _;
        let mut app = sqlx::PgConnection::connect(&db.app_url())
            .await
            .expect("app role");
        sqlx::query("SELECT count(*) FROM deployment_audit_events")
            .fetch_one(&mut app)
            .await
            .err()
    });
    assert!(
        denied.is_some_and(|e| e.to_string().contains("permission denied")),
        "the deployment stream is not readable by the application role"
    );
}

#[test]
fn a_suspended_tenant_is_permission_denied_and_a_deleted_one_not_found() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    let list = json!({ "tenant_id": 1, "namespace_id": 1 });
    ok(&server.call(Some(AGENT), "scenarios_list", list.clone()));

    db.exec(&["UPDATE tenants SET state = 'suspended' WHERE tenant_id = 1"]);
    // A state is trusted for at most a second on each replica.
    std::thread::sleep(Duration::from_millis(1200));
    let result = server.call(Some(AGENT), "scenarios_list", list.clone());
    assert_eq!(error_kind(&result).as_deref(), Some("permission_denied"));
    let message = result["structuredContent"]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("tenant_suspended"), "{message}");

    db.exec(&["UPDATE tenants SET state = 'deleted' WHERE tenant_id = 1"]);
    std::thread::sleep(Duration::from_millis(1200));
    let result = server.call(Some(AGENT), "scenarios_list", list.clone());
    assert_eq!(error_kind(&result).as_deref(), Some("not_found"));

    db.exec(&["UPDATE tenants SET state = 'active' WHERE tenant_id = 1"]);
    std::thread::sleep(Duration::from_millis(1200));
    ok(&server.call(Some(AGENT), "scenarios_list", list));

    // A namespace that was never provisioned is not found, and its refusal is recorded in the
    // deployment stream with the ids it named.
    let result = server.call(
        Some(AGENT),
        "scenarios_list",
        json!({ "tenant_id": 1, "namespace_id": 77 }),
    );
    assert_eq!(error_kind(&result).as_deref(), Some("not_found"));
    let named = db.strings(
        "SELECT named_tenant::text || '/' || named_namespace::text FROM deployment_audit_events
          ORDER BY event_id DESC LIMIT 1",
    );
    assert_eq!(named, ["1/77"]);
}
