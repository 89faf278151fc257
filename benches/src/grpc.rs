//! Area `grpc`: `Next` over gRPC on loopback against the in-memory store, beside
//! `scenario_next` over MCP Streamable HTTP from the same server in the same run. Both load
//! clients run in separate processes with the same concurrency, one connection per worker.
//!
//! - `vs_mcp`: gRPC calls/s divided by MCP calls/s, the median over alternating rounds.
//!   Target: at least 1.5.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use decision_gate_mcp::grpc::pb::{self, decision_gate_client::DecisionGateClient};
use tonic::transport::Channel;

use crate::mcp::{self, CONCURRENCY, PHASE, ROUNDS, SCENARIO, median, phase_line, run_load};

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> Vec<(&'static str, f64, &'static str, &'static str, f64)> {
    let bin = PathBuf::from(std::env::var("DG_BIN").expect("DG_BIN: the release decision-gate binary (scripts/bench.sh sets it)"));
    let dir = tempfile::tempdir().expect("temp dir");
    let server = mcp::decision_gate(&bin, &dir.path().join("memory"), "memory", true);
    let mcp_url = format!("http://{}/mcp", server.addr);
    let grpc_addr = server.grpc.expect("the server serves gRPC").to_string();
    let millis = PHASE.as_millis().to_string();
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let over_mcp = run_load(&["mcp-load".into(), mcp_url.clone(), "scenario_next".into(), millis.clone()]);
        phase_line(&format!("round {round}: scenario_next over MCP (Streamable HTTP)"), &over_mcp);
        let over_grpc = run_load(&["grpc-load".into(), grpc_addr.clone(), millis.clone()]);
        phase_line(&format!("round {round}: Next over gRPC"), &over_grpc);
        ratios.push(over_grpc.calls_per_sec / over_mcp.calls_per_sec);
    }
    vec![("vs_mcp", median(ratios), "x", ">=", 1.5)]
}

async fn connect(addr: &str) -> DecisionGateClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("endpoint").connect().await.expect("connect");
    DecisionGateClient::new(channel)
}

fn logical(n: u64) -> Option<pb::Timestamp> {
    Some(pb::Timestamp { kind: Some(pb::timestamp::Kind::Logical(n)) })
}

/// `grpc-load ADDR MILLIS`: drives `Next` with CONCURRENCY workers (one connection each, each on
/// its own run) for MILLIS, as fast as answers come; prints JSON like `mcp-load`.
pub async fn load_client(args: &[String]) {
    let addr = args[0].clone();
    let millis: u64 = args[1].parse().expect("millis");
    let run_tag = std::process::id();
    let mut setup = connect(&addr).await;
    let spec: serde_json::Value = serde_json::from_str(SCENARIO).expect("scenario");
    setup.define_scenario(pb::DefineScenarioRequest { spec_json: spec.to_string() }).await.expect("define");
    for w in 0..CONCURRENCY {
        setup
            .start_run(pb::StartRunRequest {
                scenario_id: "cycle".into(),
                tenant_id: 1,
                namespace_id: 1,
                run_id: format!("g-{run_tag}-{w}"),
                started_at: logical(0),
                dispatch_targets: Vec::new(),
            })
            .await
            .expect("start");
    }
    let deadline = Instant::now() + Duration::from_millis(millis);
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|w| {
            let addr = addr.clone();
            tokio::spawn(async move {
                let mut client = connect(&addr).await;
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let request = pb::NextRequest {
                        scenario_id: "cycle".into(),
                        tenant_id: 1,
                        namespace_id: 1,
                        run_id: format!("g-{run_tag}-{w}"),
                        trigger_id: format!("t-{n}"),
                        agent_id: "bench".into(),
                        time: logical(n),
                        ..Default::default()
                    };
                    let sent = Instant::now();
                    match client.next(request).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("first error: {e}");
                            }
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    mcp::print_workers(workers, started).await;
}
