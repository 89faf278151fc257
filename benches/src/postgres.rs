//! Area `postgres`: `scenario_next` through the release `decision-gate-enterprise` binary on
//! Postgres (the server at `DG_PG_URL`, which `scripts/bench.sh` gets from
//! `scripts/postgres.sh`), driven by the `mcp-load` client in another process.
//!
//! - `rls_overhead`: how much slower triggers/s are with row-level security forced (the real
//!   schema) than on a scratch copy with `DISABLE ROW LEVEL SECURITY` on every tenant table,
//!   in percent, medians over alternating rounds. Target: at most 10.
//! - `trigger_vs_pgbench`: triggers/s (RLS on) divided by pgbench's rate of single-row INSERT
//!   transactions on the same server at the same concurrency: the machine's ceiling for one
//!   durable write per call. Target: at least 0.4.
//! - `trigger_flat`: the cost of a trigger on a run with 10,000 earlier triggers divided by
//!   its cost on a run with 10, one client, interleaved batches, medians. Target: at most 1.2.
//!
//! Both servers write their audit trail to a memory-backed file, so the figures are the
//! database's, not the audit file's.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp::{self, CONCURRENCY, PHASE, ROUNDS, SCENARIO};

type Line = (&'static str, f64, &'static str, &'static str, f64);

/// A PostgreSQL client program: from PATH, else the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin(name: &str) -> PathBuf {
    let on_path = Command::new("sh").args(["-c", &format!("command -v {name}")]).output();
    if let Ok(out) = on_path
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| d.parent().and_then(Path::file_name).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0));
    dirs.last().map(|d| d.join(name)).filter(|p| p.exists()).unwrap_or_else(|| panic!("{name} not found: install PostgreSQL"))
}

/// `host:port` of `DG_PG_URL`.
fn pg_host() -> String {
    let url = std::env::var("DG_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r).to_owned();
    let hostpart = rest.rsplit_once('@').map_or(rest.as_str(), |(_, h)| h);
    hostpart.split(['/', '?']).next().unwrap_or("127.0.0.1:5432").to_owned()
}

fn owner_url(db: &str) -> String {
    format!("postgres://postgres@{}/{db}", pg_host())
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new(pg_bin("psql")).args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", &owner_url(db), "-c", sql]).output().expect("psql");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn enterprise(bin: &Path, args: &[&str]) {
    let out = Command::new(bin).args(args).env_remove("DATABASE_URL").output().expect("decision-gate-enterprise");
    assert!(out.status.success(), "decision-gate-enterprise {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A scratch database, migrated and provisioned (tenant 1, namespace 1), dropped on drop.
struct Database {
    name: String,
    config: PathBuf,
}

impl Database {
    fn create(bin: &Path, dir: &Path, name: &str, audit: &Path) -> Self {
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        let host = pg_host();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "data_dir = {data:?}\n[database]\nurl = \"postgres://dg_app:dg_app@{host}/{name}\"\nowner_url = \"postgres://postgres@{host}/{name}\"\nmax_connections = {conns}\n\
             [[tenancy.organisations]]\norganisation_id = 1\nname = \"bench\"\n\
             [[tenancy.tenants]]\ntenant_id = 1\norganisation_id = 1\nname = \"bench\"\nnamespaces = [{{ namespace_id = 1, name = \"bench\" }}]\n\
             [server.limits]\nmax_inflight = 4096\n[server.audit]\npath = {audit:?}\n",
            data = dir.join(name).display().to_string(),
            conns = CONCURRENCY * 2,
            audit = audit.display().to_string(),
        );
        std::fs::write(&config, text).expect("write config");
        let file = config.to_str().expect("path");
        enterprise(bin, &["migrate", "--config", file]);
        enterprise(bin, &["provision", "--config", file]);
        Self { name: name.to_owned(), config }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new(pg_bin("psql")).args(["-X", "-q", "-d", &owner_url("postgres"), "-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)]).output();
    }
}

/// A running enterprise server, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(bin: &Path, db: &Database) -> Server {
    let mut child = Command::new(bin)
        .args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(&db.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start decision-gate-enterprise");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr = loop {
        let line = lines.next().expect("server exited").expect("stderr line");
        if let Some(rest) = line.split("serving MCP on http://").nth(1) {
            break rest.split('/').next().expect("address").parse().expect("socket address");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, addr }
}

fn triggers_per_sec(server: &Server) -> f64 {
    let url = format!("http://{}/mcp", server.addr);
    let m = mcp::run_load(&["mcp-load".to_owned(), url, "scenario_next".to_owned(), PHASE.as_millis().to_string()]);
    m.calls_per_sec
}

/// pgbench's rate of one-row INSERT transactions at the load client's concurrency.
fn pgbench_tps(dir: &Path) -> f64 {
    let db = "dg_bench_pgbench";
    psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(db, "CREATE TABLE one_row (id bigserial PRIMARY KEY, body text NOT NULL)");
    let script = dir.join("insert.sql");
    std::fs::write(&script, "INSERT INTO one_row (body) VALUES ('x');\n").expect("script");
    let clients = CONCURRENCY.to_string();
    let out = Command::new(pg_bin("pgbench"))
        .args(["-n", "-c", &clients, "-j", &clients, "-T", &PHASE.as_secs().to_string(), "-f"])
        .arg(&script)
        .arg(owner_url(db))
        .output()
        .expect("pgbench");
    psql("postgres", &format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    assert!(out.status.success(), "pgbench: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split(' ').next()).and_then(|v| v.parse().ok()))
        .unwrap_or_else(|| panic!("no tps in pgbench output: {text}"))
}

async fn post(client: &reqwest::Client, url: &str, tool: &str, arguments: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
    let text = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string())
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    let v: Value = serde_json::from_str(&text).expect("JSON-RPC");
    assert!(v["result"]["isError"] == json!(false), "{tool}: {text}");
    v
}

/// Per-trigger cost on a run with 10,000 earlier triggers over one with 10.
async fn trigger_flat(server: &Server) -> f64 {
    let url = format!("http://{}/mcp", server.addr);
    let client = reqwest::Client::new();
    let spec: Value = serde_json::from_str(SCENARIO).expect("scenario");
    post(&client, &url, "scenario_define", json!({"spec": spec})).await;
    let runs = ["flat-short", "flat-long"];
    for run in runs {
        post(&client, &url, "scenario_start", json!({"scenario_id": "cycle", "started_at": {"kind": "logical", "value": 0}, "run_config": {"tenant_id": 1, "namespace_id": 1, "run_id": run}})).await;
    }
    let mut sent = [0u64; 2];
    let next = |run: usize, n: u64| json!({"scenario_id": "cycle", "request": {"run_id": runs[run], "tenant_id": 1, "namespace_id": 1, "trigger_id": format!("t{n}"), "agent_id": "bench", "time": {"kind": "logical", "value": n}}});
    for (run, earlier) in [(0, 10), (1, 10_000)] {
        for _ in 0..earlier {
            sent[run] += 1;
            post(&client, &url, "scenario_next", next(run, sent[run])).await;
        }
    }
    let mut per_run: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..15 {
        for run in [0, 1] {
            let started = Instant::now();
            for _ in 0..10 {
                sent[run] += 1;
                post(&client, &url, "scenario_next", next(run, sent[run])).await;
            }
            per_run[run].push(started.elapsed().as_nanos() as f64 / 10.0);
        }
    }
    let [short, long] = per_run;
    eprintln!("per trigger, one client: {:.0} µs at 10 earlier triggers, {:.0} µs at 10,000", mcp::median(short.clone()) / 1000.0, mcp::median(long.clone()) / 1000.0);
    mcp::median(long) / mcp::median(short)
}

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> Vec<Line> {
    let bin = PathBuf::from(std::env::var("DG_ENTERPRISE_BIN").expect("DG_ENTERPRISE_BIN: the release decision-gate-enterprise binary (scripts/bench.sh sets it)"));
    let dir = tempfile::tempdir().expect("temp dir");
    let shm = Path::new("/dev/shm");
    let audit_dir = if shm.is_dir() { shm.to_path_buf() } else { dir.path().to_path_buf() };
    let pid = std::process::id();
    psql(
        "postgres",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dg_app') THEN \
         CREATE ROLE dg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD 'dg_app'; END IF; END $$",
    );
    let rls_db = Database::create(&bin, dir.path(), &format!("dg_bench_rls_{pid}"), &audit_dir.join(format!("dg-bench-rls-{pid}.jsonl")));
    let plain_db = Database::create(&bin, dir.path(), &format!("dg_bench_norls_{pid}"), &audit_dir.join(format!("dg-bench-norls-{pid}.jsonl")));
    // The scratch copy: row-level security off on every tenant table (dropping the policies
    // while FORCE stays would deny everything instead).
    let tables = psql(&plain_db.name, "SELECT string_agg(c.relname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relrowsecurity");
    for table in tables.split(',').filter(|t| !t.is_empty()) {
        psql(&plain_db.name, &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"));
    }
    let rls = serve(&bin, &rls_db);
    let plain = serve(&bin, &plain_db);

    let (mut with_rls, mut without) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let a = triggers_per_sec(&rls);
        let b = triggers_per_sec(&plain);
        eprintln!("round {round}: scenario_next on Postgres: {a:.0}/s with RLS forced, {b:.0}/s with RLS disabled");
        with_rls.push(a);
        without.push(b);
    }
    let pgbench = pgbench_tps(dir.path());
    eprintln!("pgbench single-row INSERT transactions, {CONCURRENCY} clients: {pgbench:.0} tps");
    let (with_rls, without) = (mcp::median(with_rls), mcp::median(without));
    drop(plain);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let started = Instant::now();
    let flat = runtime.block_on(trigger_flat(&rls));
    eprintln!("trigger_flat took {:?}", started.elapsed().max(Duration::ZERO));
    drop(rls);
    for name in [format!("dg-bench-rls-{pid}.jsonl"), format!("dg-bench-norls-{pid}.jsonl")] {
        let _ = std::fs::remove_file(audit_dir.join(name));
    }
    vec![
        ("rls_overhead", (without - with_rls) / without * 100.0, "%", "<=", 10.0),
        ("trigger_vs_pgbench", with_rls / pgbench, "x", ">=", 0.4),
        ("trigger_flat", flat, "x", "<=", 1.2),
    ]
}
