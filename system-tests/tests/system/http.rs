//! The HTTP transport's edges: bad JSON-RPC, unknown methods and tools, wrong content types,
//! oversized bodies, correlation ids, rate limits, health, readiness and metrics. Each refusal
//! has its own status and kind, and the server keeps serving.

use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::support::{Server, call_body, post};

fn jsonrpc(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn assert_still_serving(http: &Client, server: &Server) {
    let (status, _, body) = post(
        http,
        &server.mcp_url(),
        call_body(99, "providers_list", json!({})),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(jsonrpc(&body)["result"]["isError"], false);
}

#[test]
fn malformed_requests_get_json_rpc_errors_and_the_server_keeps_serving() {
    let server = Server::start();
    let http = Client::new();
    let url = server.mcp_url();

    let (status, _, body) = post(&http, &url, "{not json", &[]);
    assert!((400..500).contains(&status), "{status} {body}");
    assert_eq!(jsonrpc(&body)["error"]["code"], -32700, "{body}");

    let (_, _, body) = post(
        &http,
        &url,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/destroy"}).to_string(),
        &[],
    );
    assert_eq!(jsonrpc(&body)["error"]["code"], -32601, "{body}");

    let (_, _, body) = post(&http, &url, call_body(2, "scenario_delete", json!({})), &[]);
    let error = &jsonrpc(&body)["error"];
    assert_eq!(error["code"], -32602, "{body}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("scenario_delete")
    );

    let wrong_type = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("accept", "application/json, text/event-stream")
        .body(call_body(3, "providers_list", json!({})))
        .send()
        .unwrap();
    assert_eq!(wrong_type.status().as_u16(), 415);

    // Arguments that break the schema: the field is named, nothing is written.
    let (_, _, body) = post(
        &http,
        &url,
        call_body(
            4,
            "scenario_status",
            json!({ "scenario_id": "s", "request": { "run_id": "a\u{1}b", "tenant_id": 1, "namespace_id": 1 } }),
        ),
        &[],
    );
    let result = &jsonrpc(&body)["result"];
    assert_eq!(result["isError"], true, "{body}");
    assert_eq!(
        result["structuredContent"]["error"]["kind"],
        "invalid_input"
    );
    assert!(
        result["structuredContent"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request.run_id"),
        "{body}"
    );

    assert_still_serving(&http, &server);
}

#[test]
fn an_oversized_body_is_refused_with_its_own_kind_and_audited() {
    let server = Server::start_with(Some("[server.limits]\nmax_body_bytes = 2048\n"), |_| {});
    let http = Client::new();
    let url = server.mcp_url();
    let big = call_body(1, "providers_list", json!({ "padding": "x".repeat(4096) }));
    let (status, headers, body) = post(&http, &url, big.clone(), &[]);
    assert_eq!(status, 413, "{body}");
    // The unread body ends the connection, and the answer says so, so the client's pool does
    // not send the next request down a closing connection.
    assert_eq!(headers["connection"], "close");
    let error = &jsonrpc(&body)["error"];
    assert_eq!(error["code"], -32070);
    assert_eq!(error["data"]["kind"], "too_large");

    // Without a declared length (chunked), the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new(
        chunks
            .into_iter()
            .flat_map(Result::unwrap)
            .collect::<Vec<u8>>(),
    ));
    let (status, headers, _) = post(&http, &url, streamed, &[]);
    assert_eq!(status, 413);
    assert_eq!(headers["connection"], "close");

    let audit = server.audit();
    assert!(
        audit.iter().filter(|e| e["refusal"] == "too_large").count() >= 2,
        "{audit:?}"
    );
    assert_still_serving(&http, &server);
}

#[test]
fn correlation_ids_are_validated_echoed_and_never_reflected_when_invalid() {
    let server = Server::start();
    let http = Client::new();
    let url = server.mcp_url();
    let list = call_body(1, "providers_list", json!({}));

    let (status, headers, _) = post(&http, &url, list.clone(), &[("x-correlation-id", "job-42")]);
    assert_eq!(status, 200);
    assert_eq!(headers["x-correlation-id"], "job-42");
    let request_id = headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("dg-"), "{request_id}");

    let (status, headers, body) = post(&http, &url, list, &[("x-correlation-id", "a<b>")]);
    assert_eq!(status, 400, "{body}");
    assert!(headers.get("x-correlation-id").is_none());
    assert!(headers.get("x-request-id").is_some());
    let error = &jsonrpc(&body)["error"];
    assert_eq!(error["code"], -32073);
    assert_eq!(error["data"]["kind"], "invalid_correlation_id");

    let audit = server.audit();
    let call = audit
        .iter()
        .find(|e| e["event"] == "call")
        .expect("call audited");
    assert_eq!(call["correlation_id"], "job-42");
    assert_eq!(call["request_id"], request_id);
    assert!(
        audit
            .iter()
            .any(|e| e["refusal"] == "invalid_correlation_id" && e["presented_hash"].is_object()),
        "{audit:?}"
    );
}

#[test]
fn a_principal_over_its_rate_is_refused_with_a_retry_time() {
    let server = Server::start_with(
        Some("[server.limits.rate_limit]\nrequests_per_second = 1\nburst = 2\n"),
        |_| {},
    );
    let http = Client::new();
    let url = server.mcp_url();
    let list = call_body(1, "providers_list", json!({}));
    let statuses: Vec<(u16, reqwest::header::HeaderMap, String)> = (0..4)
        .map(|_| post(&http, &url, list.clone(), &[]))
        .collect();
    let limited = statuses
        .iter()
        .find(|(status, _, _)| *status == 429)
        .expect("a request over the burst is limited");
    let error = &jsonrpc(&limited.2)["error"];
    assert_eq!(error["code"], -32071);
    assert_eq!(error["data"]["kind"], "rate_limited");
    assert_eq!(error["data"]["retryable"], true);
    assert!(error["data"]["retry_after_ms"].as_u64().unwrap() >= 1);
    assert!(limited.1.get("retry-after").is_some());
    // A refusal ends the connection (its body was never read); admitted answers keep theirs.
    assert_eq!(limited.1["connection"], "close");
    assert!(
        statuses
            .iter()
            .filter(|(status, _, _)| *status == 200)
            .all(|(_, headers, _)| headers.get("connection").is_none_or(|v| v != "close"))
    );
    assert!(
        server
            .audit()
            .iter()
            .any(|e| e["refusal"] == "rate_limited" && e["principal"] == "loopback")
    );
}

#[test]
fn health_readiness_and_metrics_answer() {
    let server = Server::start();
    let http = Client::new();
    let health: Value = http
        .get(server.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ready: Value = http
        .get(server.url("/readyz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ready["status"], "ready");
    post(
        &http,
        &server.mcp_url(),
        call_body(1, "providers_list", json!({})),
        &[],
    );
    post(
        &http,
        &server.mcp_url(),
        call_body(2, "scenarios_list", json!({})),
        &[],
    );
    let metrics = http
        .get(server.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains(r#"decision_gate_tool_calls_total{tool="providers_list",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"decision_gate_tool_calls_total{tool="scenarios_list",outcome="invalid_input"} 1"#
        ),
        "{metrics}"
    );
}

/// With `[runpacks]` configured, `runpack_export` signs the manifest, and `runpack_export` with
/// verification and `runpack_verify` check the signature against the trusted keys and replay
/// every decision.
#[test]
fn runpack_tools_sign_with_the_configured_key_and_verify_with_replay() {
    use std::os::unix::fs::PermissionsExt as _;
    let config = "[runpacks]\nsigning_key_file = \"runpack.key\"\ntrusted_keys = [\"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a\"]\n";
    let server = Server::start_with(Some(config), |dir| {
        let key = dir.join("runpack.key");
        std::fs::write(
            &key,
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        )
        .expect("key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("mode");
    });
    let http = reqwest::blocking::Client::new();
    let call = |id: u64, tool: &str, arguments: serde_json::Value| -> serde_json::Value {
        let (status, _, body) = post(
            &http,
            &server.mcp_url(),
            call_body(id, tool, arguments),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        let reply: serde_json::Value = serde_json::from_str(&body).expect("reply");
        assert_eq!(reply["result"]["isError"], false, "{tool}: {body}");
        reply["result"]["structuredContent"].clone()
    };
    let spec: serde_json::Value =
        serde_json::from_str(crate::support::THREE_STAGE).expect("fixture");
    call(1, "scenario_define", serde_json::json!({ "spec": spec }));
    call(
        2,
        "scenario_start",
        serde_json::json!({ "scenario_id": "release-train",
            "started_at": { "kind": "unix_millis", "value": 0 },
            "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "run-1" } }),
    );
    let exported = call(
        3,
        "runpack_export",
        serde_json::json!({ "tenant_id": 1, "namespace_id": 1, "scenario_id": "release-train",
            "run_id": "run-1", "generated_at": { "kind": "unix_millis", "value": 9 },
            "include_verification": true }),
    );
    assert_eq!(
        exported["report"]["failures"],
        serde_json::json!([]),
        "{exported}"
    );
    assert_eq!(exported["report"]["replayed"], true, "{exported}");
    let export_id = exported["export_id"].as_str().expect("export id");
    let signature = server
        .dir
        .path()
        .join("data/runpacks/t1/n1/run-1")
        .join(export_id)
        .join("manifest.sig");
    assert!(signature.is_file(), "{}", signature.display());
    let verified = call(
        4,
        "runpack_verify",
        serde_json::json!({ "tenant_id": 1, "namespace_id": 1, "run_id": "run-1",
                            "export_id": export_id }),
    );
    assert_eq!(verified["status"], "pass", "{verified}");
    assert_eq!(verified["report"]["replayed"], true, "{verified}");

    // Without its signature the stored runpack fails: a key is trusted.
    std::fs::remove_file(&signature).expect("remove signature");
    let (_, _, body) = post(
        &http,
        &server.mcp_url(),
        call_body(
            5,
            "runpack_verify",
            serde_json::json!({ "tenant_id": 1, "namespace_id": 1, "run_id": "run-1",
                                "export_id": export_id }),
        ),
        &[],
    );
    let reply: serde_json::Value = serde_json::from_str(&body).expect("reply");
    let report = &reply["result"]["structuredContent"];
    assert_eq!(report["status"], "fail", "{body}");
    assert!(body.contains("a signature is required"), "{body}");
}
