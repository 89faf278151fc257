//! The server library composes with parts it has never heard of: an enterprise-style
//! composition root passes its own `Authenticate`, `AuditSink`, `UsageMeter`, `RunpackStore`
//! and an extra route, through `decision-gate-mcp`'s builder alone.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use decision_gate_core::access::{
    AccessEvent, AuditError, AuditEvent, AuditSink, UsageError, UsageEvent, UsageMeter,
};
use decision_gate_core::identity::{AuthMethod, Authenticate, AuthnError, Credentials};
use decision_gate_core::runpack::MemoryRunpackStore;
use decision_gate_core::store::RunpackStore;
use decision_gate_core::{MemoryStore, Principal, TenantId};
use decision_gate_mcp::{Server, config};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Accepts one API-key-like header value and names the principal after it.
struct KeyHeader;

#[async_trait]
impl Authenticate for KeyHeader {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        match credentials.headers.get("x-api-key").map(|v| v.as_bytes()) {
            Some(b"k-123") => Ok(Principal {
                subject: "key-holder".into(),
                credential_id: Some("k".into()),
                auth_method: AuthMethod::ApiKey,
                tenant_id: Some(TenantId::new(1).expect("tenant")),
                ..Principal::default()
            }),
            _ => Err(AuthnError::refused("no valid x-api-key")),
        }
    }
}

#[derive(Default)]
struct Trail {
    calls: Mutex<Vec<AuditEvent>>,
    refusals: Mutex<Vec<AccessEvent>>,
}

#[async_trait]
impl AuditSink for Trail {
    async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.calls.lock().expect("lock").extend_from_slice(events);
        Ok(())
    }

    async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
        self.refusals.lock().expect("lock").push(event.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Ledger(Mutex<Vec<UsageEvent>>);

#[async_trait]
impl UsageMeter for Ledger {
    async fn check(&self, _: &[UsageEvent]) -> Result<(), UsageError> {
        Ok(())
    }

    async fn record(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        self.0.lock().expect("lock").extend_from_slice(events);
        Ok(())
    }
}

async fn call(http: &reqwest::Client, url: &str, key: &str, tool: &str, args: Value) -> Value {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": { "name": tool, "arguments": args } });
    let reply = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("x-api-key", key)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    let status = reply.status().as_u16();
    let text = reply.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("HTTP {status} {text}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_composes_with_its_callers_parts_and_routes() {
    let trail = Arc::new(Trail::default());
    let ledger = Arc::new(Ledger::default());
    let runpacks = Arc::new(MemoryRunpackStore::default());
    let loaded = config::parse("", std::path::Path::new(".")).expect("empty configuration");
    let server = Server::builder(loaded)
        .store(Arc::new(MemoryStore::default()))
        .runpack_store(runpacks.clone())
        .audit_sink(trail.clone())
        .usage_meter(ledger.clone())
        .authenticate(Arc::new(KeyHeader))
        .routes(axum::Router::new().route("/admin/ping", axum::routing::get(async || "pong")))
        .build()
        .expect("every required part");
    let bound = server
        .bind_http("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let base = format!("http://{}", bound.local_addr());
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(bound.run(shutdown.clone()));
    let http = reqwest::Client::new();
    let mcp = format!("{base}/mcp");

    let ping = http
        .get(format!("{base}/admin/ping"))
        .send()
        .await
        .expect("ping");
    assert_eq!(ping.text().await.expect("body"), "pong");

    let spec = json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{ "stage_id": "only", "advance_to": { "kind": "terminal" } }]
    });
    let defined = call(
        &http,
        &mcp,
        "k-123",
        "scenario_define",
        json!({ "spec": spec }),
    )
    .await;
    assert_eq!(defined["result"]["isError"], false, "{defined}");
    let started = call(
        &http,
        &mcp,
        "k-123",
        "scenario_start",
        json!({ "scenario_id": "s", "started_at": { "kind": "logical", "value": 0 },
                "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": "r" } }),
    )
    .await;
    assert_eq!(started["result"]["isError"], false, "{started}");
    let exported = call(
        &http,
        &mcp,
        "k-123",
        "runpack_export",
        json!({ "tenant_id": 1, "namespace_id": 1, "scenario_id": "s", "run_id": "r",
                "generated_at": { "kind": "logical", "value": 1 } }),
    )
    .await;
    assert_eq!(exported["result"]["isError"], false, "{exported}");

    // The tenant-bound principal of the caller's authentication reaches no other tenant.
    let other = call(
        &http,
        &mcp,
        "k-123",
        "scenarios_list",
        json!({ "tenant_id": 2, "namespace_id": 1 }),
    )
    .await;
    assert_eq!(
        other["result"]["structuredContent"]["error"]["kind"], "not_found",
        "{other}"
    );
    let refused = call(&http, &mcp, "wrong", "scenarios_list", json!({})).await;
    assert_eq!(
        refused["error"]["data"]["kind"], "unauthenticated",
        "{refused}"
    );

    let calls = trail.calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    assert!(calls.iter().all(|e| e.principal == "key-holder"));
    assert_eq!(trail.refusals.lock().expect("lock").len(), 1);
    let usage = ledger.0.lock().expect("lock").clone();
    assert!(
        usage
            .iter()
            .any(|u| u.metric == decision_gate_core::access::UsageMetric::RunpackExports),
        "{usage:#?}"
    );
    let export_id = exported["result"]["structuredContent"]["export_id"]
        .as_str()
        .expect("export id")
        .to_owned();
    let key = decision_gate_core::store::RunpackKey {
        run: decision_gate_core::run::RunKey {
            tenant_id: TenantId::new(1).expect("tenant"),
            namespace_id: decision_gate_core::NamespaceId::new(1).expect("namespace"),
            run_id: "r".parse().expect("run id"),
        },
        export_id,
    };
    assert!(
        !runpacks.list_files(&key).await.expect("list").is_empty(),
        "the runpack landed in the caller's store"
    );
    shutdown.cancel();
    serving.await.expect("join").expect("served");
}
