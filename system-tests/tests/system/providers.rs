//! External evidence providers: an MCP server built with the official Python SDK, run as a
//! stdio child process by the server under test, answers gates; its contract is enforced at
//! define time, its raw values are withheld from `evidence_query`, and a provider that does not
//! answer in time makes its condition unknown without failing the call.

use serde_json::{Value, json};

use std::time::Duration;

use reqwest::blocking::Client;

use crate::support::{Sdk, Server, call_body, drive, ok, post, tool_error, unix};

const GATE: &str = include_str!("../../fixtures/deploy-gate.json");

fn config() -> String {
    config_with("")
}

fn config_with(extra: &str) -> String {
    let python = std::env::var("DG_PYTHON")
        .expect("DG_PYTHON is not set: run scripts/test.sh, which installs the MCP clients");
    let provider = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/python/provider.py");
    let contract = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/deploys-contract.json"
    );
    format!(
        r#"
{extra}
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
    assert_eq!(deploys["checks"], json!(["ready", "slow", "huge"]));
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

    // The process that timed out (still sleeping in its tool) was killed and reaped: the
    // server's only child is the fresh connection's, none lingering, none a zombie.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut children = server.children();
    while children.len() != 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        children = server.children();
    }
    assert_eq!(children.len(), 1, "one provider process: {children:?}");
    assert_ne!(children[0].1, 'Z', "{children:?}");
}

#[test]
fn requests_beyond_the_in_flight_limit_are_refused_as_overloaded_on_both_transports() {
    let server = Server::start_with(
        Some(&config_with("[server.limits]\nmax_inflight = 1\n")),
        |_| {},
    );
    let spec: Value = serde_json::from_str(GATE).unwrap();
    let http = Client::new();
    let url = server.mcp_url();
    let setup = [
        call_body(1, "scenario_define", json!({ "spec": spec })),
        call_body(
            2,
            "scenario_start",
            json!({ "scenario_id": "deploy-gate", "started_at": unix(0),
                    "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "r" } }),
        ),
        call_body(3, "scenario_next", next("n-1", 10)["arguments"].clone()),
    ];
    for body in setup {
        let (status, _, text) = post(&http, &url, body, &[]);
        assert_eq!(status, 200, "{text}");
    }
    // The run now waits on the slow check, which holds the only permit for about 3 s.
    let slow_url = url.clone();
    let slow = std::thread::spawn(move || {
        post(
            &Client::new(),
            &slow_url,
            call_body(4, "scenario_next", next("n-2", 20)["arguments"].clone()),
            &[],
        )
    });
    std::thread::sleep(Duration::from_millis(700));
    let (status, _, body) = post(&http, &url, call_body(5, "providers_list", json!({})), &[]);
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], -32072);
    assert_eq!(error["error"]["data"]["kind"], "overloaded");
    assert_eq!(error["error"]["data"]["retryable"], true);
    // The limit is one budget for the server: gRPC finds it spent too.
    let refused = crate::grpc::runtime().block_on(async {
        crate::grpc::client(&server)
            .await
            .list_providers(decision_gate_mcp::grpc::pb::ListProvidersRequest {})
            .await
            .expect_err("overloaded")
    });
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert_eq!(
        refused.metadata().get("dg-error-kind").expect("kind"),
        "overloaded"
    );
    let (status, _, _) = slow.join().unwrap();
    assert_eq!(status, 200);
    // With the permit back, the server serves again.
    let (status, _, _) = post(&http, &url, call_body(6, "providers_list", json!({})), &[]);
    assert_eq!(status, 200);
    let audit = server.audit();
    for transport in ["http", "grpc"] {
        assert!(
            audit
                .iter()
                .any(|e| e["refusal"] == "overloaded" && e["transport"] == transport),
            "{transport}: {audit:?}"
        );
    }
}

/// The provider as a Streamable HTTP server on a free loopback port, killed on drop.
pub(crate) struct HttpProvider {
    child: std::process::Child,
    pub(crate) port: u16,
}

impl Drop for HttpProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn http_provider() -> HttpProvider {
    let python = std::env::var("DG_PYTHON").expect("DG_PYTHON is not set: run scripts/test.sh");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/clients/python/provider.py"
        ))
        .args(["--http", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the HTTP provider");
    let provider = HttpProvider { child, port };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return provider;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the HTTP provider did not start on port {port}");
}

#[test]
fn an_external_provider_over_streamable_http_answers_queries() {
    let provider = http_provider();
    let contract = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/deploys-contract.json"
    );
    let config = format!(
        "[[providers.mcp]]\nprovider_id = \"deploys\"\nurl = \"http://127.0.0.1:{}/mcp\"\ncontract = {contract:?}\n",
        provider.port
    );
    let server = Server::start_with(Some(&config), |_| {});
    let (status, _, body) = post(
        &Client::new(),
        &server.mcp_url(),
        call_body(
            1,
            "evidence_query",
            json!({
                "query": { "provider_id": "deploys", "check_id": "ready", "params": { "environment": "staging" } },
                "context": { "tenant_id": 1, "namespace_id": 1, "run_id": "r", "scenario_id": "s",
                             "stage_id": "wait", "trigger_id": "q", "trigger_time": unix(1) } }),
        ),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let result: Value = serde_json::from_str(&body).unwrap();
    let answer = &result["result"]["structuredContent"]["result"];
    assert_eq!(answer["error"], Value::Null, "{body}");
    // The digest of `true`, canonical JSON, SHA-256.
    assert_eq!(
        answer["evidence_hash"]["value"],
        "b5bea41b6c623f7c09f1bf24dcae58ebab3c0cdd90ad966bc43a45b44867e12b",
        "{body}"
    );
}
