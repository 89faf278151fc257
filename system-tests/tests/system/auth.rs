//! Authentication over HTTP: local-only exposure rules, bearer tokens (stored hashed, refused
//! and audited), token scope, and mTLS with the subject from the verified certificate only.

use std::process::Command;

use hmac::{Hmac, Mac};
use reqwest::blocking::Client;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{Server, binary, call_body, post};
use decision_gate_system_tests::pki::{Ca, write_server_files};

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The token of the unrestricted "ci" principal in [`bearer_config`].
pub(crate) const CI_TOKEN: &str = "ci-token-0123456789";

pub(crate) fn bearer_config() -> String {
    format!(
        r#"
[server.auth]
mode = "bearer"

[[server.auth.tokens]]
subject = "ci"
token_sha256 = "{}"

[[server.auth.tokens]]
subject = "reader"
token_sha256 = "{}"
tenant_id = 7
tools = ["providers_list", "scenarios_list"]
"#,
        sha256_hex(CI_TOKEN),
        sha256_hex("reader-token-0123456789"),
    )
}

fn text_of(server: &Server) -> String {
    std::fs::read_to_string(server.data_dir().join("audit.jsonl")).unwrap()
}

fn result(body: &str) -> Value {
    let value: Value = serde_json::from_str(body).expect("JSON-RPC response");
    value["result"].clone()
}

#[test]
fn a_bearer_server_refuses_missing_and_wrong_tokens_and_audits_them() {
    let server = Server::start_with(Some(&bearer_config()), |_| {});
    let http = Client::new();
    let url = server.mcp_url();
    let list = call_body(1, "providers_list", json!({}));

    let (status, headers, body) = post(&http, &url, list.clone(), &[]);
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        headers["www-authenticate"].to_str().unwrap(),
        r#"Bearer realm="decision-gate""#
    );
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], -32001);
    assert_eq!(error["error"]["data"]["kind"], "unauthenticated");

    let wrong = "ci-token-0123456788";
    let (status, _, body) = post(
        &http,
        &url,
        list.clone(),
        &[("authorization", &format!("Bearer {wrong}"))],
    );
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(wrong), "the refusal never echoes the token");

    let (status, _, body) = post(
        &http,
        &url,
        list,
        &[("authorization", "Bearer ci-token-0123456789")],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(result(&body)["isError"], false, "{body}");

    let audit = server.audit();
    let refusals: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "access" && e["refusal"] == "unauthenticated")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit:?}");
    // The digest is keyed by the server's secret: HMAC-SHA-256 of the token's SHA-256, never
    // the plain hash a leaked trail could test guesses against.
    let key = std::fs::read_to_string(server.data_dir().join("audit-digest.key")).unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hex::decode(key.trim()).unwrap()).unwrap();
    mac.update(sha256_hex(wrong).as_bytes());
    let keyed = hex::encode(mac.finalize().into_bytes());
    assert_eq!(refusals[1]["presented_hash"]["algorithm"], "hmac_sha256");
    assert_eq!(refusals[1]["presented_hash"]["value"], keyed);
    assert!(!text_of(&server).contains(&sha256_hex(wrong)));
    assert_eq!(refusals[1]["detail"], "the bearer token is not recognised");
    let text = std::fs::read_to_string(server.dir.path().join("data/audit.jsonl")).unwrap();
    assert!(
        !text.contains(wrong),
        "the audit trail holds hashes, never tokens"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "call" && e["principal"] == "ci"),
        "{audit:?}"
    );
}

#[test]
fn a_token_is_bound_to_its_tools_and_tenant() {
    let server = Server::start_with(Some(&bearer_config()), |_| {});
    let http = Client::new();
    let url = server.mcp_url();
    let auth = [("authorization", "Bearer reader-token-0123456789")];

    let (_, _, body) = post(
        &http,
        &url,
        call_body(
            1,
            "scenarios_list",
            json!({ "tenant_id": 7, "namespace_id": 1 }),
        ),
        &auth,
    );
    assert_eq!(result(&body)["isError"], false, "{body}");

    // Another tenant looks exactly like a missing resource.
    let (_, _, body) = post(
        &http,
        &url,
        call_body(
            2,
            "scenarios_list",
            json!({ "tenant_id": 1, "namespace_id": 1 }),
        ),
        &auth,
    );
    assert_eq!(
        result(&body)["structuredContent"]["error"]["kind"],
        "not_found",
        "{body}"
    );

    // A tool outside the token's list is a permission error.
    let (_, _, body) = post(
        &http,
        &url,
        call_body(
            3,
            "schemas_list",
            json!({ "tenant_id": 7, "namespace_id": 1 }),
        ),
        &auth,
    );
    assert_eq!(
        result(&body)["structuredContent"]["error"]["kind"],
        "permission_denied",
        "{body}"
    );
}

pub(crate) fn mtls_config() -> String {
    r#"
[server]
allowed_hosts = ["localhost"]

[server.auth]
mode = "mtls"

[[server.auth.clients]]
subject = "agent-1"

[server.tls]
cert_path = "server.pem"
key_path = "server.key"
client_ca_path = "client-ca.pem"
"#
    .to_owned()
}

fn mtls_client(ca: &Ca, identity: Option<&decision_gate_system_tests::pki::Leaf>) -> Client {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert, leaf.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[test]
fn an_mtls_server_takes_the_subject_from_the_verified_certificate_only() {
    let ca = Ca::new("decision-gate test CA");
    let server = Server::start_with(Some(&mtls_config()), |dir| write_server_files(dir, &ca));
    assert_eq!(server.scheme, "https");
    let url = server.mcp_url();
    let list = call_body(1, "providers_list", json!({}));

    let trusted = mtls_client(&ca, Some(&ca.client("agent-1")));
    let (status, _, body) = post(&trusted, &url, list.clone(), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(result(&body)["isError"], false, "{body}");

    // A certificate from another CA is refused in the handshake, whatever header comes with it.
    let rogue_ca = Ca::new("rogue CA");
    let rogue = mtls_client(&ca, Some(&rogue_ca.client("agent-1")));
    let refused = rogue
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-decision-gate-client-subject", "agent-1")
        .body(list.clone())
        .send();
    assert!(refused.is_err(), "an unverified certificate was accepted");

    // No certificate at all is refused too.
    assert!(
        mtls_client(&ca, None)
            .post(&url)
            .body(list.clone())
            .send()
            .is_err()
    );

    // A verified certificate whose subject is not configured authenticates nobody.
    let stranger = mtls_client(&ca, Some(&ca.client("agent-2")));
    let (status, _, body) = post(&stranger, &url, list, &[]);
    assert_eq!(status, 401, "{body}");

    let audit = server.audit();
    let handshakes = audit
        .iter()
        .filter(|e| {
            e["refusal"] == "unauthenticated"
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("TLS handshake refused"))
        })
        .count();
    assert!(handshakes >= 2, "{audit:?}");
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "call" && e["principal"] == "agent-1"),
        "{audit:?}"
    );
}

#[test]
fn a_non_loopback_address_needs_authentication_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    // The HTTP and gRPC listeners follow the same rule, each on its own.
    for flag in ["--http", "--grpc"] {
        let out = Command::new(binary())
            .args(["serve", flag, "0.0.0.0:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("DECISION_GATE_CONFIG")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{stderr}");
        assert!(stderr.contains("server.auth.mode"), "{stderr}");
        assert!(stderr.contains("server.tls"), "{stderr}");
    }
}

/// A token allowed only `scenario_next` that asks for `trace` feedback gets its decision with
/// the gates it evaluated: the gates are part of the call, not a second `scenario_status`
/// call that the token may not make. One audit event per call; an idempotency key that does
/// not fit the rules is refused before anything runs.
#[test]
fn a_next_only_token_gets_trace_feedback_in_one_call() {
    let config = format!(
        "{}\n[[server.auth.tokens]]\nsubject = \"agent\"\ntoken_sha256 = \"{}\"\ntools = [\"scenario_next\"]\n\n[server.feedback]\nmax = \"trace\"\n",
        bearer_config(),
        sha256_hex("agent-token-0123456789"),
    );
    let server = Server::start_with(Some(&config), |_| {});
    let http = Client::new();
    let url = server.mcp_url();
    let ci = [("authorization", format!("Bearer {CI_TOKEN}"))];
    let ci: Vec<(&str, &str)> = ci.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let spec: Value = serde_json::from_str(crate::support::THREE_STAGE).expect("fixture");
    for (id, tool, args) in [
        (1, "scenario_define", json!({ "spec": spec })),
        (
            2,
            "scenario_start",
            json!({ "scenario_id": "release-train", "started_at": { "kind": "unix_millis", "value": 0 },
                    "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "run-1" } }),
        ),
    ] {
        let (_, _, body) = post(&http, &url, call_body(id, tool, args), &ci);
        assert_eq!(result(&body)["isError"], false, "{body}");
    }
    let next = call_body(
        3,
        "scenario_next",
        json!({ "scenario_id": "release-train", "feedback": "trace",
                "request": { "run_id": "run-1", "tenant_id": 1, "namespace_id": 1,
                             "trigger_id": "n-1", "agent_id": "agent-7",
                             "time": { "kind": "unix_millis", "value": 500 } } }),
    );
    let agent = [
        ("authorization", "Bearer agent-token-0123456789"),
        ("idempotency-key", "next-n-1"),
    ];
    let before = server.audit().len();
    let (status, _, body) = post(&http, &url, next.clone(), &agent);
    assert_eq!(status, 200, "{body}");
    let answer = result(&body);
    assert_eq!(answer["isError"], false, "{body}");
    let feedback = &answer["structuredContent"]["feedback"];
    assert_eq!(feedback["level"], "trace", "{body}");
    assert_eq!(
        feedback["gate_evaluations"][0]["evaluation"]["gate_id"], "planning-closed",
        "{body}"
    );
    let audit = server.audit();
    let calls: Vec<&Value> = audit[before..]
        .iter()
        .filter(|e| e["principal"] == "agent")
        .collect();
    assert_eq!(calls.len(), 1, "one audit event for the call: {calls:?}");
    assert_eq!(calls[0]["action"], "scenario_next");
    assert_eq!(calls[0]["outcome"]["result"], "success");

    let bad_key = [
        ("authorization", "Bearer agent-token-0123456789"),
        ("idempotency-key", "has space"),
    ];
    let (status, _, body) = post(&http, &url, next.clone(), &bad_key);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("idempotency-key contains whitespace"),
        "{body}"
    );

    // The same rule for a key in the request's `_meta`: refused before the tool runs, audited.
    let mut with_meta: Value = serde_json::from_str(&next).expect("call body");
    with_meta["params"]["_meta"] = json!({ "idempotency_key": "has space" });
    let before = server.audit().len();
    let (status, _, body) = post(&http, &url, with_meta.to_string(), &agent[..1]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("_meta.idempotency_key contains whitespace"),
        "{body}"
    );
    let audit = server.audit();
    assert!(
        audit[before..].iter().any(|e| e["event"] == "access"
            && e["refusal"] == "invalid_request"
            && e["principal"] == "agent"),
        "the refusal is audited: {audit:?}"
    );
}
