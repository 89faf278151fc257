//! External evidence providers: an MCP server built with the official Python SDK, run as a
//! stdio child process by the server under test, answers gates; its contract is enforced at
//! define time, its raw values are withheld from `evidence_query`, and a provider that does not
//! answer in time makes its condition unknown without failing the call.

use serde_json::{Value, json};

use crate::support::{Sdk, Server, drive, ok, tool_error, unix};

const GATE: &str = include_str!("../../fixtures/deploy-gate.json");

fn config() -> String {
    let python = std::env::var("DG_PYTHON")
        .expect("DG_PYTHON is not set: run scripts/test.sh, which installs the MCP clients");
    let provider = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/provider.py");
    let contract = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/deploys-contract.json"
    );
    format!(
        r#"
[server.feedback]
max = "evidence"

[[providers.mcp]]
provider_id = "deploys"
command = [{python:?}, {provider:?}]
contract = {contract:?}
timeout_ms = 3000
lane = "verified"
"#
    )
}

fn next(trigger: &str, at: i64) -> Value {
    json!({ "tool": "scenario_next", "arguments": {
        "scenario_id": "deploy-gate",
        "request": { "run_id": "r", "tenant_id": 1, "namespace_id": 1, "trigger_id": trigger,
                     "agent_id": "a", "time": unix(at) },
        "feedback": "evidence" } })
}

#[test]
fn an_external_mcp_provider_answers_gates_within_its_contract_and_timeout() {
    let server = Server::start_with(Some(&config()), |_| {});
    let spec: Value = serde_json::from_str(GATE).unwrap();
    let mut bad_params = spec.clone();
    bad_params["scenario_id"] = json!("bad-params");
    bad_params["conditions"][0]["query"]["params"] = json!({ "env": "staging" });
    let out = drive(
        Sdk::Python,
        json!({ "url": server.mcp_url() }),
        json!([
            { "tool": "providers_list", "arguments": {} },
            { "tool": "provider_check_schema_get", "arguments": { "provider_id": "deploys", "check_id": "ready" } },
            { "tool": "scenario_define", "arguments": { "spec": bad_params } },
            { "tool": "scenario_define", "arguments": { "spec": spec } },
            { "tool": "scenario_start", "arguments": { "scenario_id": "deploy-gate",
                "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "r" }, "started_at": unix(0) } },
            next("n-1", 10),
            next("n-2", 20),
            { "tool": "evidence_query", "arguments": {
                "query": { "provider_id": "deploys", "check_id": "ready", "params": { "environment": "staging" } },
                "context": { "tenant_id": 1, "namespace_id": 1, "run_id": "r", "scenario_id": "deploy-gate",
                             "stage_id": "wait", "trigger_id": "q-1", "trigger_time": unix(30) } } },
        ]),
    );
    let r = out["results"].as_array().unwrap();

    let providers = &ok(&r[0])["providers"];
    let deploys = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["provider_id"] == "deploys")
        .expect("the external provider is listed");
    assert_eq!(deploys["transport"], "mcp");
    assert_eq!(deploys["checks"], json!(["ready", "slow"]));
    assert_eq!(ok(&r[1])["result_schema"], json!({ "type": "boolean" }));

    // The contract's params schema is enforced when the scenario is defined.
    let refused = tool_error(&r[2]);
    assert_eq!(refused["kind"], "invalid_input");
    assert!(
        refused["details"].to_string().contains("params"),
        "{refused}"
    );
    ok(&r[3]);
    ok(&r[4]);

    // The external answer passes the first gate; its evidence is recorded with a digest.
    let advanced = ok(&r[5]);
    assert_eq!(
        advanced["decision"]["outcome"]["kind"], "advance",
        "{advanced}"
    );
    let evidence = &advanced["feedback"]["gate_evaluations"][0]["evidence"][0];
    assert_eq!(evidence["result"]["lane"], "verified", "{advanced}");
    assert!(
        evidence["result"]["evidence_hash"].is_object(),
        "{advanced}"
    );
    assert_eq!(
        evidence["result"]["value"],
        Value::Null,
        "raw values are withheld by default"
    );

    // The slow check times out: the condition is unknown, the run holds, the call succeeds.
    let held = ok(&r[6]);
    assert_eq!(held["decision"]["outcome"]["kind"], "hold", "{held}");
    let slow = &held["feedback"]["gate_evaluations"][0]["evidence"][0]["result"]["error"];
    assert_eq!(slow["code"], "provider_error", "{held}");
    assert!(
        slow["message"].as_str().unwrap().contains("3000 ms"),
        "{held}"
    );

    // The provider still answers after the timeout (a fresh connection).
    let queried = &ok(&r[7])["result"];
    assert!(queried["evidence_hash"].is_object(), "{queried}");
    assert_eq!(queried["value"], Value::Null);
}
