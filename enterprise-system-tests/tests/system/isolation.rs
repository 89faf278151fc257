//! Tenant isolation through the tools: tenant A's principal reaches none of tenant B's
//! scenarios, runs, schemas or runpacks, whichever tool it uses and whichever tenant it names.

use serde_json::{Value, json};

use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, error_kind, logical,
    migrate_and_provision, next_args, ok, sha256_hex, start_args,
};

pub(crate) const TOKEN_A: &str = "tenant-a-token-0123456789";
pub(crate) const TOKEN_B: &str = "tenant-b-token-0123456789";

pub(crate) fn auth() -> String {
    format!(
        r#"
[server.auth]
mode = "bearer"

[[server.auth.tokens]]
subject = "agent-a"
token_sha256 = "{}"
tenant_id = 1

[[server.auth.tokens]]
subject = "agent-b"
token_sha256 = "{}"
tenant_id = 2
"#,
        sha256_hex(TOKEN_A),
        sha256_hex(TOKEN_B)
    )
}

/// Every tool that names a tenant's resource, aimed at tenant B's: `(tool, arguments)` with
/// the tenant ids set to `tenant`.
fn probes(tenant: u64, export_id: &str) -> Vec<(&'static str, Value)> {
    let run = json!({ "run_id": "run-b", "tenant_id": tenant, "namespace_id": 1 });
    let mut submit = run.clone();
    submit["submission_id"] = json!("s-a");
    submit["payload"] = json!({ "kind": "json", "value": { "x": 1 } });
    submit["content_type"] = json!("application/json");
    submit["submitted_at"] = logical(5);
    let mut trigger = run.clone();
    trigger["trigger_id"] = json!("tick-a");
    trigger["kind"] = json!("tick");
    trigger["time"] = logical(5);
    trigger["source_id"] = json!("scheduler");
    let mut context = run.clone();
    context["scenario_id"] = json!("cycle");
    context["stage_id"] = json!("plan");
    context["trigger_id"] = json!("q-a");
    context["trigger_time"] = logical(5);
    vec![
        (
            "scenario_start",
            json!({ "scenario_id": "cycle", "started_at": logical(0),
                    "run_config": { "tenant_id": tenant, "namespace_id": 1, "run_id": "run-a" } }),
        ),
        (
            "scenario_status",
            json!({ "scenario_id": "cycle", "request": run }),
        ),
        ("scenario_next", next_args(tenant, "run-b", "next-a", 5)),
        (
            "scenario_submit",
            json!({ "scenario_id": "cycle", "request": submit }),
        ),
        (
            "scenario_trigger",
            json!({ "scenario_id": "cycle", "trigger": trigger }),
        ),
        (
            "evidence_query",
            json!({ "query": { "provider_id": "time", "check_id": "after", "params": { "timestamp": 0 } },
                    "context": context }),
        ),
        (
            "runpack_export",
            json!({ "tenant_id": tenant, "namespace_id": 1, "scenario_id": "cycle",
                    "run_id": "run-b", "generated_at": logical(9) }),
        ),
        (
            "runpack_verify",
            json!({ "tenant_id": tenant, "namespace_id": 1, "run_id": "run-b", "export_id": export_id }),
        ),
        (
            "schemas_get",
            json!({ "tenant_id": tenant, "namespace_id": 1, "schema_id": "claim", "version": "v1" }),
        ),
        (
            "precheck",
            json!({ "tenant_id": tenant, "namespace_id": 1, "scenario_id": "cycle", "stage_id": "plan",
                    "data_shape": { "schema_id": "claim", "version": "v1" }, "payload": { "x": 1 } }),
        ),
    ]
}

#[test]
fn tenant_a_reaches_nothing_of_tenant_b_through_any_tool() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);

    // Tenant B: a scenario, a run with a decision, a data shape and a runpack.
    let b = Some(TOKEN_B);
    let mut spec = cycle();
    spec["default_tenant_id"] = json!(2);
    ok(&server.call(b, "scenario_define", json!({ "spec": spec })));
    ok(&server.call(b, "scenario_start", start_args(2, "run-b")));
    ok(&server.call(b, "scenario_next", next_args(2, "run-b", "next-1", 1)));
    ok(&server.call(
        b,
        "schemas_register",
        json!({ "record": { "tenant_id": 2, "namespace_id": 1, "schema_id": "claim", "version": "v1",
                             "schema": { "type": "object" }, "created_at": logical(0) } }),
    ));
    let export = server.call(
        b,
        "runpack_export",
        json!({ "tenant_id": 2, "namespace_id": 1, "scenario_id": "cycle", "run_id": "run-b",
                "generated_at": logical(2) }),
    );
    let export_id = ok(&export)["export_id"]
        .as_str()
        .expect("export id")
        .to_owned();

    // Tenant A naming tenant B, and tenant A naming its own tenant with B's ids: not found.
    let a = Some(TOKEN_A);
    for tenant in [2, 1] {
        for (tool, arguments) in probes(tenant, &export_id) {
            if tenant == 1 && tool == "evidence_query" {
                // In its own tenant it asks a provider about a time it gives; no tenant-owned
                // row is read, so B's run id reveals nothing.
                continue;
            }
            let result = server.call(a, tool, arguments);
            assert_eq!(
                error_kind(&result).as_deref(),
                Some("not_found"),
                "{tool} as tenant A naming tenant {tenant}: {result}"
            );
        }
        for tool in ["scenarios_list", "schemas_list"] {
            let result = server.call(a, tool, json!({ "tenant_id": tenant, "namespace_id": 1 }));
            if tenant == 2 {
                assert_eq!(
                    error_kind(&result).as_deref(),
                    Some("not_found"),
                    "{tool} of tenant B as tenant A: {result}"
                );
            } else {
                let items = ok(&result)["items"].as_array().cloned().unwrap_or_default();
                assert!(items.is_empty(), "{tool} of tenant A shows B's: {result}");
            }
        }
    }
    // A spec bound to tenant B cannot be defined by tenant A.
    let result = server.call(a, "scenario_define", json!({ "spec": spec }));
    assert!(result["isError"] == json!(true), "{result}");

    // Tenant B still sees its own, unchanged: one decision, nothing written by A.
    let status = server.call(
        b,
        "scenario_status",
        json!({ "scenario_id": "cycle", "request": { "run_id": "run-b", "tenant_id": 2, "namespace_id": 1 } }),
    );
    let status = ok(&status);
    assert_eq!(status["current_stage_id"], "build", "{status}");
    let rows = db.strings("SELECT tenant_id::text || '/' || run_id FROM runs ORDER BY 1");
    assert_eq!(rows, ["2/run-b"], "tenant A created no run anywhere");
    let entries = db.strings("SELECT count(*)::text FROM run_entries");
    assert_eq!(entries, ["2"], "start and one decision, nothing from A");
}

/// Providers are per tenant (issue 21, item 10): tenant A's `json` root holds a secret; tenant B
/// reaches only `time`, so it can neither define a condition over the file, nor query it, nor
/// see A's provider — it cannot learn a byte of the file, not even through a comparator or a
/// digest.
#[test]
fn tenant_b_cannot_learn_a_byte_of_a_file_in_tenant_a_root() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let rest = format!(
        "{}\n[tenancy.providers.1.json]\nroot = \"tenant-a-files\"\nroot_id = \"a-files\"\n",
        auth()
    );
    let dir = ConfigDir::new(&config(&db, "", &rest));
    let root = dir.dir.path().join("tenant-a-files");
    std::fs::create_dir_all(&root).expect("root");
    std::fs::write(root.join("secret.json"), r#"{"password": "hunter2"}"#).expect("secret");
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    let (a, b) = (Some(TOKEN_A), Some(TOKEN_B));

    let ids = |token| -> Vec<String> {
        ok(&server.call(token, "providers_list", json!({})))["providers"]
            .as_array()
            .expect("providers")
            .iter()
            .map(|p| p["provider_id"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids(a), ["json", "time"]);
    assert_eq!(ids(b), ["time"], "tenant B reaches only time");

    let query = json!({ "provider_id": "json", "check_id": "path",
                        "params": { "file": "secret.json", "jsonpath": "$.password" } });
    let mut spec = cycle();
    spec["scenario_id"] = json!("probe");
    spec["conditions"] = json!([{ "condition_id": "guess", "query": query,
                                  "comparator": "equals", "expected": "hunter2" }]);
    for stage in spec["stages"].as_array_mut().expect("stages") {
        for gate in stage["gates"].as_array_mut().expect("gates") {
            gate["requirement"] = json!({ "Condition": "guess" });
        }
    }
    let refused = server.call(b, "scenario_define", json!({ "spec": spec }));
    assert_eq!(
        error_kind(&refused).as_deref(),
        Some("invalid_input"),
        "{refused}"
    );
    assert!(refused.to_string().contains("json"), "{refused}");
    ok(&server.call(a, "scenario_define", json!({ "spec": spec })));

    let context = |tenant: u64| {
        json!({ "tenant_id": tenant, "namespace_id": 1, "run_id": "r", "scenario_id": "probe",
                "stage_id": "plan", "trigger_id": "q", "trigger_time": logical(1) })
    };
    // To tenant B, A's provider is indistinguishable from one that exists nowhere.
    let mut nowhere = query.clone();
    nowhere["provider_id"] = json!("nowhere");
    let queried = server.call(
        b,
        "evidence_query",
        json!({ "query": query, "context": context(2) }),
    );
    let missing = server.call(
        b,
        "evidence_query",
        json!({ "query": nowhere, "context": context(2) }),
    );
    assert_eq!(error_kind(&queried), error_kind(&missing), "{queried}");
    assert_eq!(
        queried.to_string().replace("json", "nowhere"),
        missing.to_string(),
        "the same answer as for a provider that does not exist"
    );
    let contract = server.call(b, "provider_contract_get", json!({ "provider_id": "json" }));
    assert_eq!(
        error_kind(&contract).as_deref(),
        Some("not_found"),
        "{contract}"
    );
    for answer in [&refused, &queried, &contract] {
        assert!(!answer.to_string().contains("hunter2"), "{answer}");
    }
    // Tenant A reads its own file.
    let own = server.call(
        a,
        "evidence_query",
        json!({ "query": query, "context": context(1) }),
    );
    assert!(ok(&own)["result"]["evidence_hash"].is_object(), "{own}");
}
