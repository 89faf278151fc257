//! Area `mcp`: `scenario_next` over Streamable HTTP on loopback, driven by a load client in a
//! separate process (this binary's `mcp-load` mode), against the real `decision-gate` binary on
//! the in-memory store and on SQLite, and against a trivial rmcp echo tool served the same way
//! (the same axum application and guard, stateless Streamable HTTP with JSON responses) as the
//! transport ceiling.
//!
//! - `http_vs_echo`: in-memory `scenario_next` calls/s divided by echo calls/s at the same
//!   concurrency, the median over five rounds that alternate which goes first. Target: at
//!   least 0.6.
//! - `p99_half_load`: p99 latency of `scenario_next` (in-memory) at half of its median peak
//!   rate, the median over rounds. Target: at most 5 ms.
//!
//! The scenario has three stages in a cycle (plan → build → ship → plan), each gated on the
//! `time` provider, so every call evaluates a gate, advances, discloses a packet and appends a
//! journal entry. Each load worker drives its own run, so calls never race on a revision.

use anyhow::Context as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Concurrent load workers.
pub(crate) const CONCURRENCY: usize = 8;
/// Length of each measured phase.
pub(crate) const PHASE: Duration = Duration::from_secs(4);
/// Alternating rounds per figure.
pub(crate) const ROUNDS: usize = 3;
/// Rounds of the peak phases behind `http_vs_echo`.
const PEAK_ROUNDS: usize = 5;

pub(crate) const SCENARIO: &str = r#"{
  "scenario_id": "cycle", "namespace_id": 1, "spec_version": "1",
  "stages": [
    {"stage_id": "plan", "gates": [{"gate_id": "g1", "requirement": {"Condition": "started"}}],
     "entry_packets": [{"packet_id": "plan", "schema_id": "brief", "content_type": "application/json",
                        "payload": {"kind": "json", "value": {"stage": "plan"}}}],
     "advance_to": {"kind": "linear"}},
    {"stage_id": "build", "gates": [{"gate_id": "g2", "requirement": {"Condition": "started"}}],
     "entry_packets": [{"packet_id": "build", "schema_id": "brief", "content_type": "application/json",
                        "payload": {"kind": "json", "value": {"stage": "build"}}}],
     "advance_to": {"kind": "linear"}},
    {"stage_id": "ship", "gates": [{"gate_id": "g3", "requirement": {"Condition": "started"}}],
     "entry_packets": [{"packet_id": "ship", "schema_id": "brief", "content_type": "application/json",
                        "payload": {"kind": "json", "value": {"stage": "ship"}}}],
     "advance_to": {"kind": "fixed", "stage_id": "plan"}}
  ],
  "conditions": [{"condition_id": "started",
                  "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                  "comparator": "equals", "expected": true}]
}"#;

/// What one load phase measured: a load client prints it as JSON, the orchestrator reads it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Measured {
    calls: usize,
    errors: u64,
    seconds: f64,
    pub(crate) calls_per_sec: f64,
    pub(crate) p50_ms: f64,
    p99_ms: f64,
}

pub(crate) struct Process {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The gRPC listener, when the server prints one.
    pub(crate) grpc: Option<SocketAddr>,
    /// A file of the server's outside the bench's temporary directory (its audit trail on
    /// `/dev/shm`), removed with it: it lives in memory and grows by every call.
    outside: Option<PathBuf>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.outside {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts a server that prints `... serving MCP on http://ADDR/mcp ...` on stderr (and, with
/// `grpc`, `... serving gRPC on ADDR ...`).
pub(crate) fn spawn_server(mut cmd: Command, grpc: bool) -> anyhow::Result<Process> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("start server")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut addr = None;
    let mut grpc_addr = None;
    while addr.is_none() || (grpc && grpc_addr.is_none()) {
        let line = lines
            .next()
            .context("server exited")?
            .context("stderr line")?;
        if let Some(rest) = line.split("serving gRPC on ").nth(1) {
            grpc_addr = Some(
                rest.split(' ')
                    .next()
                    .context("address")?
                    .parse()
                    .context("socket address")?,
            );
        } else if let Some(rest) = line.split("serving MCP on http://").nth(1) {
            addr = Some(
                rest.split('/')
                    .next()
                    .context("address")?
                    .parse()
                    .context("socket address")?,
            );
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Process {
        child,
        addr: addr.context("address")?,
        grpc: grpc_addr,
        outside: None,
    })
}

/// One load phase of `clients` workers calling `tool` at `url`, open loop at `rate` calls/s
/// when given.
pub(crate) fn load(
    url: &str,
    tool: &str,
    clients: usize,
    rate: Option<f64>,
) -> anyhow::Result<Measured> {
    load_as(url, tool, clients, rate, None)
}

/// [`load`] presenting `Authorization: Bearer <bearer>` on every call.
pub(crate) fn load_as(
    url: &str,
    tool: &str,
    clients: usize,
    rate: Option<f64>,
    bearer: Option<&str>,
) -> anyhow::Result<Measured> {
    let mut args = vec![
        "mcp-load".to_owned(),
        url.to_owned(),
        tool.to_owned(),
        PHASE.as_millis().to_string(),
        clients.to_string(),
    ];
    if let Some(rate) = rate {
        args.push(format!("{rate:.1}"));
    }
    run_load_as(&args, bearer)
}

/// The environment variable that hands a load client its bearer token.
const BEARER_ENV: &str = "DG_BENCH_BEARER";

/// Runs one load phase in a separate process (this binary in a load mode) and reads its JSON.
pub(crate) fn run_load(args: &[String]) -> anyhow::Result<Measured> {
    run_load_as(args, None)
}

fn run_load_as(args: &[String], bearer: Option<&str>) -> anyhow::Result<Measured> {
    let exe = std::env::current_exe().context("bench executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(args);
    if let Some(bearer) = bearer {
        cmd.env(BEARER_ENV, bearer);
    }
    let out = cmd.output().context("run load client")?;
    anyhow::ensure!(
        out.status.success(),
        "load client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).context("load client JSON")
}

/// The store a measured server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Store {
    Memory,
    /// SQLite under the data directory, with group commit on (the default) or off.
    Sqlite {
        group_commit: bool,
    },
}

impl Store {
    /// The configuration that picks it (a top-level key or a table, so it goes first).
    fn toml(self) -> &'static str {
        match self {
            Self::Memory => "store = \"memory\"\n",
            Self::Sqlite { group_commit: true } => "store = \"sqlite\"\n",
            Self::Sqlite {
                group_commit: false,
            } => "[store.sqlite.group_commit]\nenabled = false\n",
        }
    }
}

pub(crate) fn decision_gate(
    bin: &Path,
    dir: &Path,
    store: Store,
    grpc: bool,
) -> anyhow::Result<Process> {
    decision_gate_with(bin, dir, store, grpc, "")
}

/// As [`decision_gate`], with `extra` tables appended to the configuration.
pub(crate) fn decision_gate_with(
    bin: &Path,
    dir: &Path,
    store: Store,
    grpc: bool,
    extra: &str,
) -> anyhow::Result<Process> {
    // The audit trail is synced on every call; on the in-memory run it goes to a memory-backed
    // file, so the figure is the server's, not the disk's.
    let audit = if store == Store::Memory && Path::new("/dev/shm").is_dir() {
        PathBuf::from(format!(
            "/dev/shm/decision-gate-bench-{}.jsonl",
            std::process::id()
        ))
    } else {
        dir.join("audit.jsonl")
    };
    std::fs::create_dir_all(dir).context("bench directory")?;
    let config = dir.join("decision-gate.toml");
    let text = format!(
        "{}[server.limits]\nmax_inflight = 4096\n[server.audit]\npath = {:?}\n{extra}",
        store.toml(),
        audit.display().to_string()
    );
    std::fs::write(&config, text).context("write config")?;
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.join("data"));
    if grpc {
        cmd.args(["--grpc", "127.0.0.1:0"]);
    }
    let mut process = spawn_server(cmd, grpc)?;
    if !audit.starts_with(dir) {
        process.outside = Some(audit);
    }
    Ok(process)
}

/// The echo server (this binary's `mcp-echo` mode) in its own process.
pub(crate) fn echo() -> anyhow::Result<Process> {
    let mut cmd = Command::new(std::env::current_exe().context("bench executable")?);
    cmd.arg("mcp-echo");
    spawn_server(cmd, false)
}

pub(crate) fn phase_line(label: &str, m: &Measured) {
    eprintln!(
        "{label}: {:.0} calls/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        m.calls_per_sec, m.p50_ms, m.p99_ms, m.errors
    );
}

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(
        std::env::var("DG_BIN")
            .context("DG_BIN: the release decision-gate binary (scripts/bench.sh sets it)")?,
    );
    let echo = echo()?;
    let echo_url = format!("http://{}/mcp", echo.addr);
    let dir = tempfile::tempdir().context("temp dir")?;
    let memory = decision_gate(&bin, &dir.path().join("memory"), Store::Memory, false)?;
    let url = format!("http://{}/mcp", memory.addr);

    // Echo and Decision Gate phases alternate, each round in the other order than the last, so
    // drift in the machine's speed hits both; the figures are medians over the rounds. The
    // development VM's speed moves by 10-30% within minutes, hence more rounds than elsewhere.
    let mut ratios = Vec::new();
    let mut peaks = Vec::new();
    for round in 1..=PEAK_ROUNDS {
        let phase = |url: &str, tool: &str, what: &str| -> anyhow::Result<Measured> {
            let measured = load(url, tool, CONCURRENCY, None)?;
            phase_line(&format!("round {round}: {what}"), &measured);
            Ok(measured)
        };
        let echo_phase = || phase(&echo_url, "echo", "echo (transport ceiling)");
        let next_phase = || {
            phase(
                &url,
                "scenario_next",
                "scenario_next, in-memory store, peak",
            )
        };
        let (ceiling, peak) = if round % 2 == 1 {
            let ceiling = echo_phase()?;
            (ceiling, next_phase()?)
        } else {
            let peak = next_phase()?;
            (echo_phase()?, peak)
        };
        ratios.push(peak.calls_per_sec / ceiling.calls_per_sec);
        peaks.push(peak.calls_per_sec);
    }
    drop(echo);
    let peak = crate::median(peaks);
    let mut p99s = Vec::new();
    for round in 1..=ROUNDS {
        let half = load(&url, "scenario_next", CONCURRENCY, Some(peak / 2.0))?;
        phase_line(
            &format!("round {round}: scenario_next, in-memory store, half of peak"),
            &half,
        );
        p99s.push(half.p99_ms);
    }
    drop(memory);

    let sqlite = decision_gate(
        &bin,
        &dir.path().join("sqlite"),
        Store::Sqlite { group_commit: true },
        false,
    )?;
    let url = format!("http://{}/mcp", sqlite.addr);
    let disk = load(&url, "scenario_next", CONCURRENCY, None)?;
    phase_line(
        "scenario_next, SQLite store (synchronous=FULL, group commit), peak",
        &disk,
    );
    drop(sqlite);

    Ok(vec![
        ("http_vs_echo", crate::median(ratios), "x", ">=", 0.6),
        ("p99_half_load", crate::median(p99s), "ms", "<=", 5.0),
    ])
}

/// A `tools/call` request body, written straight from typed arguments: the load loop builds
/// one per call, and a `Value` tree would put the client's allocations into the figure.
pub(crate) fn call_body(
    id: u64,
    tool: &str,
    arguments: impl serde::Serialize,
) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Request<'a, A> {
        jsonrpc: &'static str,
        id: u64,
        method: &'static str,
        params: Params<'a, A>,
    }
    #[derive(serde::Serialize)]
    struct Params<'a, A> {
        name: &'a str,
        arguments: A,
    }
    let request = Request {
        jsonrpc: "2.0",
        id,
        method: "tools/call",
        params: Params {
            name: tool,
            arguments,
        },
    };
    serde_json::to_string(&request).context("a request body")
}

#[derive(serde::Serialize)]
struct EchoArgs {
    message: &'static str,
    n: u64,
}

#[derive(serde::Serialize)]
struct NextArgs<'a> {
    scenario_id: &'static str,
    request: NextRequest<'a>,
}

#[derive(serde::Serialize)]
struct NextRequest<'a> {
    run_id: &'a str,
    tenant_id: u64,
    namespace_id: u64,
    trigger_id: &'a str,
    agent_id: &'static str,
    time: Logical,
}

#[derive(serde::Serialize)]
struct Logical {
    kind: &'static str,
    value: u64,
}

/// Sends one `tools/call` (as the bearer of `bearer`, when given) and checks that it succeeded.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    bearer: Option<&str>,
) -> anyhow::Result<()> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(bearer) = bearer {
        request = request.header("authorization", format!("Bearer {bearer}"));
    }
    let resp = request.body(body).send().await.context("request")?;
    let status = resp.status();
    let body = resp.bytes().await.context("answer")?;
    let text = || String::from_utf8_lossy(&body).into_owned();
    anyhow::ensure!(status.is_success(), "HTTP {status}: {}", text());
    // Checks the answer the way a lean client does: the JSON-RPC envelope and `isError`,
    // skipping the result's content without building a document tree (the parser checks
    // the UTF-8 of what it reads).
    let reply: Reply = serde_json::from_slice(&body).context("JSON-RPC reply")?;
    match reply {
        Reply {
            error: None,
            result: Some(ToolReply { is_error: false }),
        } => Ok(()),
        _ => anyhow::bail!("{}", text()),
    }
}

/// A JSON-RPC reply to `tools/call`, as much of it as the load client checks.
#[derive(serde::Deserialize)]
struct Reply {
    result: Option<ToolReply>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ToolReply {
    #[serde(rename = "isError", default)]
    is_error: bool,
}

/// Prints a load phase's latencies and throughput as the JSON [`run_load`] reads.
pub(crate) fn print_measured(
    mut all: Vec<Duration>,
    errors: u64,
    seconds: f64,
) -> anyhow::Result<()> {
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(f64::MAX, |d| d.as_secs_f64() * 1000.0)
    };
    let measured = Measured {
        calls: all.len(),
        errors,
        seconds,
        calls_per_sec: all.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &measured).context("write result")?;
    writeln!(stdout).context("write result")
}

/// `mcp-load URL TOOL MILLIS CLIENTS [RATE]`: drives TOOL with CLIENTS workers for MILLIS,
/// open loop at RATE calls/s in total when given, else as fast as answers come; prints JSON.
pub async fn load_client(args: &[String]) -> anyhow::Result<()> {
    let [url, tool, millis, clients, rest @ ..] = args else {
        anyhow::bail!("usage: mcp-load URL TOOL MILLIS CLIENTS [RATE]");
    };
    let (url, tool) = (url.clone(), tool.clone());
    let millis: u64 = millis.parse().context("MILLIS")?;
    let clients: usize = clients.parse().context("CLIENTS")?;
    anyhow::ensure!(clients > 0, "CLIENTS must be at least 1");
    let rate: Option<f64> = rest
        .first()
        .map(|r| r.parse().context("RATE"))
        .transpose()?;
    let run_tag = std::process::id();
    let bearer: Option<std::sync::Arc<str>> = std::env::var(BEARER_ENV).ok().map(Into::into);
    let token = bearer.as_deref();
    if tool == "scenario_next" {
        let client = reqwest::Client::new();
        let spec: Value = serde_json::from_str(SCENARIO).context("scenario")?;
        post(
            &client,
            &url,
            call_body(0, "scenario_define", json!({"spec": spec}))?,
            token,
        )
        .await
        .context("define")?;
        for w in 0..clients {
            let args = json!({"scenario_id": "cycle", "started_at": {"kind": "logical", "value": 0},
                              "run_config": {"tenant_id": 1, "namespace_id": 1, "run_id": format!("r-{run_tag}-{w}")}});
            post(&client, &url, call_body(0, "scenario_start", args)?, token)
                .await
                .context("start")?;
        }
    }
    let deadline = Instant::now() + Duration::from_millis(millis);
    let interval = rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|w| {
            let url = url.clone();
            let tool = tool.clone();
            let bearer = bearer.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let run_id = format!("r-{run_tag}-{w}");
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut n = 0u64;
                let mut next_send = Instant::now()
                    + interval.map_or(Duration::ZERO, |i| i.mul_f64(w as f64 / clients as f64));
                while Instant::now() < deadline {
                    if interval.is_some() {
                        tokio::time::sleep_until(next_send.into()).await;
                    }
                    n += 1;
                    let body = if tool == "echo" {
                        call_body(n, &tool, EchoArgs { message: "ping", n })?
                    } else {
                        let trigger_id = format!("t-{n}");
                        call_body(
                            n,
                            &tool,
                            NextArgs {
                                scenario_id: "cycle",
                                request: NextRequest {
                                    run_id: &run_id,
                                    tenant_id: 1,
                                    namespace_id: 1,
                                    trigger_id: &trigger_id,
                                    agent_id: "bench",
                                    time: Logical {
                                        kind: "logical",
                                        value: n,
                                    },
                                },
                            },
                        )?
                    };
                    let sent = Instant::now();
                    match post(&client, &url, body, bearer.as_deref()).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("first error: {e}");
                            }
                            errors += 1;
                        }
                    }
                    if let Some(i) = interval {
                        next_send += i;
                    }
                }
                anyhow::Ok((latencies, errors))
            })
        })
        .collect();
    print_workers(workers, started).await
}

/// What one load worker measured: its calls' latencies and its failed calls.
pub(crate) type Worker = tokio::task::JoinHandle<anyhow::Result<(Vec<Duration>, u64)>>;

/// Waits for the load workers and prints their latencies and errors as one phase.
pub(crate) async fn print_workers(workers: Vec<Worker>, started: Instant) -> anyhow::Result<()> {
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.context("worker")??;
        all.extend(l);
        errors += e;
    }
    print_measured(all, errors, started.elapsed().as_secs_f64())
}

/// `mcp-echo`: a trivial rmcp tool served exactly like the Decision Gate tools: the same axum
/// application (guard, local-only authentication, request ids, timeout) and the same stateless
/// Streamable HTTP configuration, so the difference is the tool layer and the service.
pub async fn echo_server() -> anyhow::Result<()> {
    use decision_gate_mcp::admission::Admission;
    use decision_gate_mcp::auth::LocalOnly;
    use decision_gate_mcp::handler::Shared;
    use decision_gate_mcp::http::{self, HttpOptions};
    use decision_gate_mcp::metrics::Metrics;
    use decision_gate_mcp::tools::ToolPolicy;
    use rmcp::model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    };
    use rmcp::service::RequestContext;
    use rmcp::{ErrorData, RoleServer, ServerHandler};

    #[derive(Clone)]
    struct Echo;

    impl ServerHandler for Echo {
        fn get_info(&self) -> ServerConfig {
            ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
        }

        async fn list_tools(
            &self,
            _: Option<PaginatedRequestParams>,
            _: RequestContext<RoleServer>,
        ) -> Result<ListToolsResult, ErrorData> {
            let schema = json!({"type": "object"});
            let Value::Object(schema) = schema else {
                unreachable!("an object literal")
            };
            Ok(ListToolsResult::with_all_items(vec![Tool::new(
                "echo",
                "Echoes its arguments.",
                Arc::new(schema),
            )]))
        }

        async fn call_tool(
            &self,
            request: CallToolRequestParams,
            _: RequestContext<RoleServer>,
        ) -> Result<CallToolResponse, ErrorData> {
            let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
            Ok(CallToolResult::structured(json!({"echo": args})).into())
        }
    }

    let audit = Arc::new(decision_gate_core::access::InMemoryAuditSink::default());
    let gate = Arc::new(decision_gate_core::DecisionGate::builder().build());
    let shared = Shared::new(gate, ToolPolicy::default(), audit, Metrics::new());
    let limits = decision_gate_mcp::config::LimitsConfig {
        max_inflight: 4096,
        ..Default::default()
    };
    let digests = decision_gate_mcp::noise::DigestKey::random().map_err(anyhow::Error::msg)?;
    let options = HttpOptions {
        admission: Arc::new(Admission::new(Arc::new(LocalOnly), &limits, digests)),
        max_body_bytes: 1024 * 1024,
        request_timeout: Duration::from_secs(30),
        header_timeout: Duration::from_millis(limits.header_timeout_ms),
        allowed_hosts: Vec::new(),
        tls: None,
        routes: Default::default(),
        metrics_auth: false,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let app = http::router_with(shared.clone(), &options, &shutdown, || Echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind")?;
    eprintln!(
        "echo: serving MCP on http://{}/mcp",
        listener.local_addr().context("address")?
    );
    http::serve(listener, app, &options, shared, shutdown)
        .await
        .context("serve")
}
