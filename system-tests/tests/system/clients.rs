//! The official Python and TypeScript MCP clients drive the real server over Streamable HTTP
//! and stdio: initialize, list tools, run a three-stage scenario to completion, export and
//! verify a runpack, precheck, and the error paths.

use serde_json::{Value, json};

use crate::support::{Sdk, Server, THREE_STAGE, drive, ok, stdio_server, tool_error, unix};

const TOOLS: [&str; 17] = [
    "scenario_define",
    "scenario_start",
    "scenario_status",
    "scenario_next",
    "scenario_submit",
    "scenario_trigger",
    "evidence_query",
    "runpack_export",
    "runpack_verify",
    "providers_list",
    "provider_contract_get",
    "provider_check_schema_get",
    "schemas_register",
    "schemas_list",
    "schemas_get",
    "scenarios_list",
    "precheck",
];

fn scope() -> Value {
    json!({ "run_id": "run-1", "tenant_id": 1, "namespace_id": 1 })
}

fn next(trigger: &str, at: i64) -> Value {
    let mut request = scope();
    request["trigger_id"] = json!(trigger);
    request["agent_id"] = json!("agent-7");
    request["time"] = unix(at);
    json!({ "tool": "scenario_next", "arguments": { "scenario_id": "release-train", "request": request } })
}

/// The first session: define, start, advance through every stage, export.
pub(crate) fn first_session() -> Value {
    let spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
    let mut submit = scope();
    submit["submission_id"] = json!("build-log");
    submit["payload"] = json!({ "kind": "json", "value": { "log": "ok" } });
    submit["content_type"] = json!("application/json");
    submit["submitted_at"] = unix(1600);
    let mut trigger = scope();
    trigger["trigger_id"] = json!("tick-3");
    trigger["kind"] = json!("tick");
    trigger["time"] = unix(2500);
    trigger["source_id"] = json!("scheduler");
    json!([
        { "tool": "scenario_define", "arguments": { "spec": spec } },
        { "tool": "scenario_start", "arguments": {
            "scenario_id": "release-train",
            "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "run-1",
                            "dispatch_targets": [{ "kind": "agent", "agent_id": "agent-7" }] },
            "started_at": unix(0) } },
        next("next-1", 500),
        next("next-2", 1500),
        next("next-2", 1500),
        { "tool": "scenario_submit", "arguments": { "scenario_id": "release-train", "request": submit } },
        { "tool": "scenario_trigger", "arguments": { "scenario_id": "release-train", "trigger": trigger } },
        next("next-4", 2600),
        { "tool": "scenario_status", "arguments": { "scenario_id": "release-train", "request": scope() } },
        { "tool": "runpack_export", "arguments": {
            "tenant_id": 1, "namespace_id": 1, "scenario_id": "release-train", "run_id": "run-1",
            "generated_at": unix(3000), "include_verification": true } },
    ])
}

fn check_first_session(sdk: Sdk, out: &Value) -> String {
    assert_eq!(out["server_name"], "decision-gate", "{sdk:?}");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(tools, TOOLS, "{sdk:?}");
    let r = out["results"].as_array().expect("results");
    assert_eq!(r.len(), 10, "{sdk:?}: {out}");

    let defined = ok(&r[0]);
    assert_eq!(defined["scenario_id"], "release-train");
    assert_eq!(defined["spec_hash"]["algorithm"], "sha256");

    let started = ok(&r[1]);
    assert_eq!(started["status"], "active");
    assert_eq!(started["current_stage_id"], "plan");
    assert_eq!(started["packets"][0]["envelope"]["packet_id"], "plan-brief");

    let hold = ok(&r[2]);
    assert_eq!(
        hold["decision"]["outcome"]["kind"], "hold",
        "{sdk:?}: {hold}"
    );
    assert_eq!(hold["status"], "active");
    assert_eq!(hold["feedback"]["level"], "summary");

    let advanced = ok(&r[3]);
    assert_eq!(
        advanced["decision"]["outcome"]["kind"], "advance",
        "{advanced}"
    );
    assert_eq!(
        advanced["packets"][0]["envelope"]["packet_id"],
        "build-brief"
    );
    // The same trigger id again: the recorded decision, nothing new.
    assert_eq!(ok(&r[4])["decision"], advanced["decision"]);

    let submitted = ok(&r[5]);
    assert_eq!(submitted["record"]["submission_id"], "build-log");
    assert_eq!(submitted["record"]["content_hash"]["algorithm"], "sha256");

    let shipped = ok(&r[6]);
    assert_eq!(
        shipped["decision"]["outcome"]["to_stage"], "ship",
        "{shipped}"
    );
    assert_eq!(shipped["packets"][0]["envelope"]["packet_id"], "ship-brief");
    assert_eq!(
        shipped["packets"][0]["receipts"][0]["target"],
        json!({ "kind": "agent", "agent_id": "agent-7" })
    );

    // The terminal stage completes the run on its next trigger.
    let completed = ok(&r[7]);
    assert_eq!(completed["status"], "completed", "{completed}");

    let status = ok(&r[8]);
    assert_eq!(status["status"], "completed");
    assert_eq!(status["current_stage_id"], "ship");
    assert_eq!(
        status["issued_packet_ids"],
        json!(["plan-brief", "build-brief", "ship-brief"])
    );

    let export = ok(&r[9]);
    assert!(
        export["report"]["failures"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "{export}"
    );
    assert!(
        export["manifest"]["integrity"]["root_hash"].is_object(),
        "{export}"
    );
    // The text copy carries the same document as the structured content.
    let text: Value = serde_json::from_str(r[9]["content"][0]["text"].as_str().expect("text"))
        .expect("text copy is JSON");
    assert_eq!(&text, export);
    export["export_id"].as_str().expect("export id").to_owned()
}

/// The second session: verify the stored runpack, precheck, and the error paths.
fn second_session(export_id: &str) -> Value {
    json!([
        { "tool": "runpack_verify", "arguments": {
            "tenant_id": 1, "namespace_id": 1, "run_id": "run-1", "export_id": export_id } },
        { "tool": "precheck", "arguments": {
            "tenant_id": 1, "namespace_id": 1, "scenario_id": "release-train", "stage_id": "build",
            "evidence": { "after-freeze": { "value": { "kind": "json", "value": true } } } } },
        { "tool": "scenarios_list", "arguments": { "tenant_id": 1, "namespace_id": 1 } },
        { "tool": "scenario_status", "arguments": {
            "scenario_id": "release-train",
            "request": { "run_id": "no-such-run", "tenant_id": 1, "namespace_id": 1 } } },
        { "tool": "scenarios_list", "arguments": { "tenant_id": 0, "namespace_id": 1 } },
        { "tool": "schemas_list", "arguments": { "tenant_id": 1, "namespace_id": 1, "cursor": "not-a-cursor" } },
        { "tool": "scenario_delete", "arguments": {} },
        { "tool": "schemas_register", "arguments": { "record": {
            "tenant_id": 1, "namespace_id": 1, "schema_id": "freeze-claim", "version": "v1",
            "schema": { "type": "object", "properties": { "after-freeze": { "type": "boolean" } } },
            "created_at": { "kind": "unix_millis", "value": 0 } } } },
        { "tool": "precheck", "arguments": {
            "tenant_id": 1, "namespace_id": 1, "scenario_id": "release-train", "stage_id": "build",
            "data_shape": { "schema_id": "freeze-claim", "version": "v1" },
            "payload": { "after-freeze": true } } },
        { "tool": "precheck", "arguments": {
            "tenant_id": 1, "namespace_id": 1, "scenario_id": "release-train", "stage_id": "build",
            "data_shape": { "schema_id": "freeze-claim", "version": "v1" },
            "payload": { "after-freeze": "yes" } } },
    ])
}

fn check_second_session(sdk: Sdk, out: &Value) {
    let r = out["results"].as_array().expect("results");
    assert_eq!(r.len(), 10, "{sdk:?}: {out}");
    let verified = ok(&r[0]);
    assert_eq!(verified["status"], "pass", "{verified}");
    // Precheck evidence is asserted; under the default trust floor (verified) it cannot pass a
    // gate, and the answer says which gate holds and why.
    let precheck = ok(&r[1]);
    assert_eq!(precheck["decision"]["kind"], "hold", "{precheck}");
    assert_eq!(
        precheck["decision"]["summary"]["unmet_gates"],
        json!(["freeze-started"])
    );
    assert_eq!(
        precheck["gate_evaluations"][0]["trace"][0]["condition_id"],
        "after-freeze"
    );
    let listed = ok(&r[2]);
    assert_eq!(listed["items"][0]["scenario_id"], "release-train");
    assert_eq!(
        listed["next_token"],
        Value::Null,
        "the last page has no next token"
    );
    assert_eq!(tool_error(&r[3])["kind"], "not_found");
    let bad_tenant = tool_error(&r[4]);
    assert_eq!(bad_tenant["kind"], "invalid_input");
    assert!(
        bad_tenant["message"]
            .as_str()
            .is_some_and(|m| m.contains("tenant_id")),
        "the error names the field: {bad_tenant}"
    );
    assert_eq!(tool_error(&r[5])["kind"], "invalid_input");
    assert_eq!(r[6]["rpc_error"]["code"], -32602, "{sdk:?}: {}", r[6]);
    // The reference form: a payload checked against a registered data shape, keyed by condition.
    ok(&r[7]);
    let shaped = ok(&r[8]);
    assert_eq!(shaped["decision"], precheck["decision"], "{shaped}");
    let mismatch = tool_error(&r[9]);
    assert_eq!(mismatch["kind"], "invalid_input", "{mismatch}");
    assert!(
        mismatch["message"]
            .as_str()
            .is_some_and(|m| m.contains("payload.after-freeze")),
        "the error names the payload member: {mismatch}"
    );
}

fn over_http(sdk: Sdk) {
    let server = Server::start();
    let target = json!({ "url": server.mcp_url() });
    let first = drive(sdk, target.clone(), first_session());
    let export_id = check_first_session(sdk, &first);
    let second = drive(sdk, target, second_session(&export_id));
    check_second_session(sdk, &second);
    // Every call reached the audit trail with the loopback principal.
    let audit = server.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "call"
            && e["action"] == "runpack_verify"
            && e["principal"] == "loopback"),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "access" && e["refusal"] == "invalid_request"),
        "invalid arguments are audited: {audit:?}"
    );
}

fn over_stdio(sdk: Sdk) {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = stdio_server(&dir.path().join("data"));
    let first = drive(sdk, target.clone(), first_session());
    let export_id = check_first_session(sdk, &first);
    // A second server process on the same data directory: scenarios, runs and runpacks persist.
    let second = drive(sdk, target, second_session(&export_id));
    check_second_session(sdk, &second);
}

#[test]
fn python_client_over_http() {
    over_http(Sdk::Python);
}

#[test]
fn python_client_over_stdio() {
    over_stdio(Sdk::Python);
}

#[test]
fn typescript_client_over_http() {
    over_http(Sdk::TypeScript);
}

#[test]
fn typescript_client_over_stdio() {
    over_stdio(Sdk::TypeScript);
}
