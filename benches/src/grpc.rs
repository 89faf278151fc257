//! Area `grpc`: `Next` over gRPC on loopback against the in-memory store, beside
//! `scenario_next` over MCP Streamable HTTP from the same server in the same run. Both load
//! clients run in separate processes with the same concurrency, one connection per worker.
//!
//! - `vs_mcp`: gRPC calls/s divided by MCP calls/s, the median over the rounds. Target: at
//!   least 1.25.
//! - `next_vs_health`: gRPC `Next` calls/s divided by the gRPC health check's through the same
//!   stack (listener, HTTP/2, tonic, request ids) with no engine work: the gRPC twin of
//!   `mcp.http_vs_echo`. Target: at least 0.6.
//!
//! Each round also measures the MCP echo tool of the `mcp` area and prints the ratio of the two
//! transports' ceilings (health check over echo): the bound on `vs_mcp` here.

use anyhow::Context as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use decision_gate_mcp::grpc::pb::{self, decision_gate_client::DecisionGateClient};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::mcp::{self, CONCURRENCY, PHASE, ROUNDS, SCENARIO, phase_line, run_load};
use crate::median;

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(
        std::env::var("DG_BIN")
            .context("DG_BIN: the release decision-gate binary (scripts/bench.sh sets it)")?,
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let server = mcp::decision_gate(&bin, &dir.path().join("memory"), mcp::Store::Memory, true)?;
    let echo = mcp::echo()?;
    let mcp_url = format!("http://{}/mcp", server.addr);
    let echo_url = format!("http://{}/mcp", echo.addr);
    let grpc_addr = server.grpc.context("the server serves gRPC")?.to_string();
    let millis = PHASE.as_millis().to_string();
    let mut ratios = Vec::new();
    let mut ceilings = Vec::new();
    let mut vs_health = Vec::new();
    for round in 1..=ROUNDS {
        let over_mcp = mcp::load(&mcp_url, "scenario_next", CONCURRENCY, None)?;
        phase_line(
            &format!("round {round}: scenario_next over MCP (Streamable HTTP)"),
            &over_mcp,
        );
        let over_grpc = run_load(&["grpc-load".into(), grpc_addr.clone(), millis.clone()])?;
        phase_line(&format!("round {round}: Next over gRPC"), &over_grpc);
        ratios.push(over_grpc.calls_per_sec / over_mcp.calls_per_sec);
        let echo = mcp::load(&echo_url, "echo", CONCURRENCY, None)?;
        phase_line(
            &format!("round {round}: MCP echo tool (transport ceiling)"),
            &echo,
        );
        let health = run_load(&["grpc-health-load".into(), grpc_addr.clone(), millis.clone()])?;
        phase_line(
            &format!("round {round}: gRPC health Check (transport ceiling)"),
            &health,
        );
        ceilings.push(health.calls_per_sec / echo.calls_per_sec);
        vs_health.push(over_grpc.calls_per_sec / health.calls_per_sec);
    }
    // With no engine work at all, gRPC/MCP is the ratio of the two transports' ceilings; any
    // work both share moves the ratio towards 1, so this bounds what vs_mcp can reach here.
    eprintln!(
        "transport ceilings, gRPC health Check / MCP echo: {:.2}x (the bound on vs_mcp on this machine)",
        median(ceilings)
    );
    Ok(vec![
        ("vs_mcp", median(ratios), "x", ">=", 1.25),
        ("next_vs_health", median(vs_health), "x", ">=", 0.6),
    ])
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .context("endpoint")?
        .connect()
        .await
        .context("connect")
}

fn logical(n: u64) -> Option<pb::Timestamp> {
    Some(pb::Timestamp {
        kind: Some(pb::timestamp::Kind::Logical(n)),
    })
}

/// One load worker's calls over its own connection.
trait Calls: Send + 'static {
    /// Sends call `n` (1, 2, ...) and waits for its answer.
    fn call(&mut self, n: u64) -> impl Future<Output = Result<(), tonic::Status>> + Send;
}

/// `Next` on the worker's own run.
struct NextCalls {
    client: DecisionGateClient<Channel>,
    run_id: String,
}

impl Calls for NextCalls {
    async fn call(&mut self, n: u64) -> Result<(), tonic::Status> {
        let request = pb::NextRequest {
            scenario_id: "cycle".into(),
            tenant_id: 1,
            namespace_id: 1,
            run_id: self.run_id.clone(),
            trigger_id: format!("t-{n}"),
            agent_id: "bench".into(),
            time: logical(n),
            ..Default::default()
        };
        self.client.next(request).await.map(drop)
    }
}

/// `grpc.health.v1.Health/Check`: no engine work, the gRPC transport's own cost.
struct HealthCalls(HealthClient<Channel>);

impl Calls for HealthCalls {
    async fn call(&mut self, _: u64) -> Result<(), tonic::Status> {
        let reply = self
            .0
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        match reply.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(tonic::Status::unavailable(format!("health: {other:?}"))),
        }
    }
}

/// Runs CONCURRENCY workers (one connection each) for MILLIS, as fast as answers come, and
/// prints JSON like `mcp-load`.
async fn drive<C: Calls>(
    addr: &str,
    millis: u64,
    worker: impl Fn(Channel, usize) -> C,
) -> anyhow::Result<()> {
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        workers.push(worker(connect(addr).await?, w));
    }
    let deadline = Instant::now() + Duration::from_millis(millis);
    let started = Instant::now();
    let workers: Vec<_> = workers
        .into_iter()
        .map(|mut calls| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let sent = Instant::now();
                    match calls.call(n).await {
                        Ok(()) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("first error: {e}");
                            }
                            errors += 1;
                        }
                    }
                }
                anyhow::Ok((latencies, errors))
            })
        })
        .collect();
    mcp::print_workers(workers, started).await
}

/// `grpc-load ADDR MILLIS`: drives `Next`, each worker on its own run.
pub async fn load_client(args: &[String]) -> anyhow::Result<()> {
    let (addr, millis) = addr_and_millis(args, "grpc-load")?;
    let run_tag = std::process::id();
    let mut setup = DecisionGateClient::new(connect(addr).await?);
    let spec: serde_json::Value = serde_json::from_str(SCENARIO).context("scenario")?;
    setup
        .define_scenario(pb::DefineScenarioRequest {
            spec_json: spec.to_string(),
        })
        .await
        .context("define")?;
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
            .context("start")?;
    }
    drive(addr, millis, |channel, w| NextCalls {
        client: DecisionGateClient::new(channel),
        run_id: format!("g-{run_tag}-{w}"),
    })
    .await
}

/// `grpc-health-load ADDR MILLIS`: drives the health check the same way.
pub async fn health_load_client(args: &[String]) -> anyhow::Result<()> {
    let (addr, millis) = addr_and_millis(args, "grpc-health-load")?;
    drive(addr, millis, |channel, _| {
        HealthCalls(HealthClient::new(channel))
    })
    .await
}

/// The `ADDR MILLIS` arguments of the gRPC load modes.
fn addr_and_millis<'a>(args: &'a [String], mode: &str) -> anyhow::Result<(&'a str, u64)> {
    let [addr, millis] = args else {
        anyhow::bail!("usage: {mode} ADDR MILLIS");
    };
    Ok((addr, millis.parse().context("MILLIS")?))
}
