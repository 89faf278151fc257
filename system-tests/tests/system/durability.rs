//! Crash safety of the embedded default under concurrent load, with group commit on (the
//! default): eight clients trigger their own runs while the server is killed with SIGKILL, again
//! and again. After every kill each acknowledged trigger is in the journal and in the audit
//! file, every run is at a whole revision (its journal is exactly revisions 1..=head), a trigger
//! that was sent but not answered is either wholly there or wholly absent, and the runs go on
//! after the restart.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use decision_gate_core::SqliteStore;
use decision_gate_core::run::RunKey;
use decision_gate_core::store::RunStore;
use decision_gate_core::{NamespaceId, RunId, TenantId, TriggerId};
use reqwest::blocking::Client;
use serde_json::{Value, json};

use crate::support::{Server, call_body, post};

const CLIENTS: usize = 8;
const ROUNDS: u64 = 6;

/// One stage whose gate never passes: every trigger is a `hold` that appends one entry.
fn holding_scenario() -> Value {
    json!({
        "scenario_id": "hold", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "wait",
                    "gates": [{"gate_id": "g", "requirement": {"Condition": "never"}}],
                    "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "never",
                        "query": {"provider_id": "time", "check_id": "after",
                                  "params": {"timestamp": 1_000_000_000_000_i64}},
                        "comparator": "equals", "expected": true}]
    })
}

fn call(http: &Client, url: &str, tool: &str, args: Value) {
    let (status, _, body) = post(http, url, call_body(1, tool, args), &[]);
    assert_eq!(status, 200, "{tool}: {body}");
    let reply: Value = serde_json::from_str(&body).expect("JSON-RPC reply");
    assert_eq!(reply["result"]["isError"], false, "{tool}: {body}");
}

/// What one client saw in one round.
#[derive(Default)]
struct Seen {
    /// Triggers answered with a decision.
    acknowledged: Vec<String>,
    /// The trigger in flight when the server died (sent, never answered), if any.
    in_doubt: Option<String>,
}

/// Triggers run `run` from `*n` on until the server stops answering.
fn drive(url: String, run: String, mut n: u64, alive: Arc<AtomicBool>) -> (Seen, u64) {
    let http = Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut seen = Seen::default();
    loop {
        n += 1;
        let trigger = format!("{run}-t{n}");
        let body = call_body(
            n,
            "scenario_next",
            json!({"scenario_id": "hold",
                   "request": {"run_id": run, "tenant_id": 1, "namespace_id": 1,
                               "trigger_id": trigger, "agent_id": "crash-test",
                               "time": {"kind": "logical", "value": n}}}),
        );
        let sent = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("x-correlation-id", trigger.as_str())
            .body(body)
            .send()
            .and_then(|r| Ok((r.status().as_u16(), r.text()?)));
        match sent {
            Ok((200, text)) => {
                let reply: Value = serde_json::from_str(&text).expect("JSON-RPC reply");
                assert_eq!(reply["result"]["isError"], false, "{text}");
                seen.acknowledged.push(trigger);
            }
            Ok((status, text)) => panic!("HTTP {status} for {trigger}: {text}"),
            Err(e) => {
                assert!(
                    !alive.load(Ordering::Acquire),
                    "{trigger} failed while the server was up: {e}"
                );
                seen.in_doubt = Some(trigger);
                return (seen, n);
            }
        }
    }
}

/// Reads the killed server's database and checks every run: whole revisions, every
/// acknowledged trigger present. Answers the triggers in the journals.
async fn check_store(server: &Server, acknowledged: &[BTreeSet<String>]) -> BTreeSet<String> {
    let store = SqliteStore::open(server.data_dir().join("decision-gate.db"))
        .await
        .expect("open the database after the kill");
    let mut journaled = BTreeSet::new();
    for (w, acked) in acknowledged.iter().enumerate() {
        let key = RunKey {
            tenant_id: TenantId::new(1).expect("tenant"),
            namespace_id: NamespaceId::new(1).expect("namespace"),
            run_id: RunId::new(format!("run-{w}")).expect("run id"),
        };
        let head = store.head(&key).await.expect("head").expect("the run");
        let mut revisions = Vec::new();
        let mut after = 0;
        loop {
            let page = store.entries(&key, after, 1000).await.expect("entries");
            let Some(last) = page.last() else { break };
            after = last.revision;
            for entry in &page {
                revisions.push(entry.revision);
                // Revision 1 is the run's start (trigger `init`).
                if let Some(t) = entry.trigger_id().filter(|_| entry.revision > 1) {
                    journaled.insert(t.to_string());
                }
            }
        }
        assert_eq!(
            revisions,
            (1..=head.revision).collect::<Vec<_>>(),
            "run-{w}: the journal is exactly revisions 1..=head"
        );
        assert_eq!(
            head.counts.triggers, head.revision,
            "run-{w}: every entry is a trigger and the head counted each"
        );
        for trigger in acked {
            let entry = store
                .entry_for_trigger(&key, &TriggerId::new(trigger.as_str()).expect("id"))
                .await
                .expect("read");
            assert!(
                entry.is_some(),
                "acknowledged {trigger} is not in the journal"
            );
        }
    }
    store.close().await;
    journaled
}

/// The correlation ids of the successful `scenario_next` calls in the audit file; every line is
/// whole JSON (a line torn by the kill is trimmed when the server opens the file again).
fn audited(server: &Server) -> BTreeSet<String> {
    server
        .audit()
        .iter()
        .filter(|e| e["action"] == "scenario_next" && e["outcome"]["result"] == "success")
        .filter_map(|e| e["correlation_id"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn acknowledged_triggers_survive_repeated_kills_under_concurrent_load() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut server = Server::start();
    let http = Client::new();
    call(
        &http,
        &server.mcp_url(),
        "scenario_define",
        json!({"spec": holding_scenario()}),
    );
    for w in 0..CLIENTS {
        call(
            &http,
            &server.mcp_url(),
            "scenario_start",
            json!({"scenario_id": "hold", "started_at": {"kind": "logical", "value": 0},
                   "run_config": {"tenant_id": 1, "namespace_id": 1, "run_id": format!("run-{w}")}}),
        );
    }
    let mut counters = [0u64; CLIENTS];
    let mut acknowledged = vec![BTreeSet::new(); CLIENTS];
    let mut in_doubt = BTreeSet::new();
    for round in 0..ROUNDS {
        let alive = Arc::new(AtomicBool::new(true));
        let clients: Vec<_> = counters
            .iter()
            .enumerate()
            .map(|(w, &n)| {
                let (url, alive) = (server.mcp_url(), alive.clone());
                std::thread::spawn(move || drive(url, format!("run-{w}"), n, alive))
            })
            .collect();
        // Kill at a different point of the load each round.
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        alive.store(false, Ordering::Release);
        server.kill();
        let mut answered = 0;
        for (w, client) in clients.into_iter().enumerate() {
            let (seen, n) = client.join().expect("client thread");
            counters[w] = n;
            answered += seen.acknowledged.len();
            acknowledged[w].extend(seen.acknowledged);
            in_doubt.extend(seen.in_doubt);
        }
        assert!(answered > 0, "round {round}: the clients were answered");
        eprintln!(
            "round {round}: {answered} acknowledged, {} in doubt",
            in_doubt.len()
        );

        let journaled = runtime.block_on(check_store(&server, &acknowledged));
        let sent: BTreeSet<String> = acknowledged.iter().flatten().cloned().collect();
        let unsent: Vec<&String> = journaled
            .iter()
            .filter(|t| !sent.contains(*t) && !in_doubt.contains(*t))
            .collect();
        assert!(
            unsent.is_empty(),
            "round {round}: the journal holds triggers never sent: {unsent:?}"
        );

        server.restart();
        let audit = audited(&server);
        let missing: Vec<&String> = sent.difference(&audit).collect();
        assert!(
            missing.is_empty(),
            "round {round}: acknowledged but not audited: {missing:?}"
        );
    }
    // The runs go on after the last crash.
    for (w, n) in counters.iter().enumerate() {
        let n = n + 1;
        call(
            &http,
            &server.mcp_url(),
            "scenario_next",
            json!({"scenario_id": "hold",
                   "request": {"run_id": format!("run-{w}"), "tenant_id": 1, "namespace_id": 1,
                               "trigger_id": format!("after-{w}"), "agent_id": "crash-test",
                               "time": {"kind": "logical", "value": n}}}),
        );
    }
}
