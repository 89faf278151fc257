//! The harness: scratch databases, the real binary (commands and a running server), and MCP
//! calls over HTTP.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use sqlx::{Connection as _, Executor as _, PgConnection};

/// The application role the servers connect as (created if missing).
pub(crate) const APP_ROLE: &str = "dg_app";

/// A three-stage cycle gated on the `time` provider: every `scenario_next` advances, discloses
/// a packet and appends one journal entry, forever.
pub(crate) const CYCLE: &str = r#"{
  "scenario_id": "cycle", "namespace_id": 1, "spec_version": "1",
  "stages": [
    {"stage_id": "plan", "gates": [{"gate_id": "g1", "requirement": {"Condition": "started"}}],
     "advance_to": {"kind": "linear"}},
    {"stage_id": "build", "gates": [{"gate_id": "g2", "requirement": {"Condition": "started"}}],
     "advance_to": {"kind": "linear"}},
    {"stage_id": "ship", "gates": [{"gate_id": "g3", "requirement": {"Condition": "started"}}],
     "advance_to": {"kind": "fixed", "stage_id": "plan"}}
  ],
  "conditions": [{"condition_id": "started",
                  "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                  "comparator": "equals", "expected": true}]
}"#;

/// The `decision-gate-enterprise` binary cargo built for this workspace.
pub(crate) fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join(format!(
        "decision-gate-enterprise{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p decision-gate-enterprise` (cargo test --workspace does)",
        bin.display()
    );
    bin
}

pub(crate) fn sha256_hex(text: &str) -> String {
    sha256_hex_bytes(text.as_bytes())
}

pub(crate) fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

// ---- databases ------------------------------------------------------------------------------

/// A Postgres server: `scheme://user@host:port`, databases addressed by name.
#[derive(Clone, Debug)]
pub(crate) struct PgServer {
    /// `host:port`.
    pub(crate) host: String,
}

impl PgServer {
    /// The server at `DG_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
    pub(crate) fn shared() -> Self {
        let url = std::env::var("DG_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let rest = url.split_once("://").expect("DG_PG_URL has a scheme").1;
        let hostpart = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let host = hostpart.split(['/', '?']).next().expect("host").to_owned();
        Self { host }
    }

    /// The superuser's URL on `database`.
    pub(crate) fn owner_url(&self, database: &str) -> String {
        format!("postgres://postgres@{}/{database}", self.host)
    }

    /// The application role's URL on `database`.
    pub(crate) fn app_url(&self, database: &str) -> String {
        format!("postgres://{APP_ROLE}:{APP_ROLE}@{}/{database}", self.host)
    }

    pub(crate) async fn superuser(&self, database: &str) -> PgConnection {
        PgConnection::connect(&self.owner_url(database))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connect to {} as superuser (run scripts/postgres.sh): {e}",
                    self.host
                )
            })
    }

    /// Creates the application role if missing (another process may race; either wins).
    pub(crate) fn ensure_app_role(&self) {
        block_on(async {
            let mut su = self.superuser("postgres").await;
            let created = su
                .execute(
                    "DO $$ BEGIN
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dg_app') THEN
                         CREATE ROLE dg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
                           NOCREATEROLE NOINHERIT PASSWORD 'dg_app';
                       END IF;
                     END $$",
                )
                .await;
            if let Err(e) = created {
                let e = e.to_string();
                assert!(
                    e.contains("already exists") || e.contains("duplicate key"),
                    "create role dg_app: {e}"
                );
            }
            let _ = su.close().await;
        });
    }

    /// Runs statements as the superuser on `database`.
    pub(crate) fn exec(&self, database: &str, statements: &[&str]) {
        block_on(async {
            let mut su = self.superuser(database).await;
            for s in statements {
                su.execute(*s).await.unwrap_or_else(|e| panic!("{s}: {e}"));
            }
            let _ = su.close().await;
        });
    }

    /// Rows of one text column, as the superuser.
    pub(crate) fn strings(&self, database: &str, query: &str) -> Vec<String> {
        block_on(async {
            let mut su = self.superuser(database).await;
            let rows: Vec<(String,)> = sqlx::query_as(query)
                .fetch_all(&mut su)
                .await
                .unwrap_or_else(|e| panic!("{query}: {e}"));
            let _ = su.close().await;
            rows.into_iter().map(|(s,)| s).collect()
        })
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// An empty scratch database `dg_est_<pid>_<n>`, dropped on drop.
pub(crate) struct ScratchDb {
    pub(crate) server: PgServer,
    pub(crate) name: String,
}

impl ScratchDb {
    pub(crate) fn create(server: &PgServer) -> Self {
        server.ensure_app_role();
        let name = format!(
            "dg_est_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        server.exec("postgres", &[&format!("CREATE DATABASE {name}")]);
        Self {
            server: server.clone(),
            name,
        }
    }

    pub(crate) fn owner_url(&self) -> String {
        self.server.owner_url(&self.name)
    }

    pub(crate) fn app_url(&self) -> String {
        self.server.app_url(&self.name)
    }

    pub(crate) fn exec(&self, statements: &[&str]) {
        self.server.exec(&self.name, statements);
    }

    pub(crate) fn strings(&self, query: &str) -> Vec<String> {
        self.server.strings(&self.name, query)
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Best effort: a crashed private cluster has nothing left to drop.
        let _ = std::thread::spawn(move || {
            block_on(async {
                if let Ok(mut su) = PgConnection::connect(&server.owner_url("postgres")).await {
                    let _ = su
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                    let _ = su.close().await;
                }
            });
        })
        .join();
    }
}

// ---- the binary -----------------------------------------------------------------------------

/// A configuration for `db`: the application URL, the owner URL, tenants 1 and 2 (organisation
/// 1, namespace 1 each), plus `extra` TOML (appended; may add `[database]` keys only before any
/// other table, so it goes first).
pub(crate) fn config(db: &ScratchDb, database_extra: &str, rest: &str) -> String {
    format!(
        r#"
[database]
url = "{app}"
owner_url = "{owner}"
acquire_timeout_ms = 1000
{database_extra}

[[tenancy.organisations]]
organisation_id = 1
name = "acme"

[[tenancy.tenants]]
tenant_id = 1
organisation_id = 1
name = "tenant a"
namespaces = [{{ namespace_id = 1, name = "default" }}]

[[tenancy.tenants]]
tenant_id = 2
organisation_id = 1
name = "tenant b"
namespaces = [{{ namespace_id = 1, name = "default" }}]

{rest}
"#,
        app = db.app_url(),
        owner = db.owner_url(),
    )
}

/// A directory holding a configuration file.
pub(crate) struct ConfigDir {
    pub(crate) dir: tempfile::TempDir,
}

impl ConfigDir {
    pub(crate) fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "data_dir = {:?}\n{text}",
            dir.path().join("data").display().to_string()
        );
        std::fs::write(dir.path().join("enterprise.toml"), text).expect("write config");
        Self { dir }
    }

    pub(crate) fn file(&self) -> PathBuf {
        self.dir.path().join("enterprise.toml")
    }
}

/// Runs a command of the binary to completion (at most a minute) with `DATABASE_URL` unset.
pub(crate) fn run(args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("DECISION_GATE_ENTERPRISE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn decision-gate-enterprise");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "decision-gate-enterprise {args:?} did not finish within a minute; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a command and parses its `--json` document.
pub(crate) fn run_json(args: &[&str]) -> (Option<i32>, Value) {
    let out = run(args);
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

/// Migrates and provisions the database of `config` through the binary.
pub(crate) fn migrate_and_provision(config: &ConfigDir) {
    let file = config.file();
    let file = file.to_str().expect("utf-8 path");
    for args in [
        ["migrate", "--config", file],
        ["provision", "--config", file],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A running `decision-gate-enterprise serve --http 127.0.0.1:0 --grpc 127.0.0.1:0`, killed on
/// drop.
pub(crate) struct Enterprise {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The gRPC listener.
    pub(crate) grpc: SocketAddr,
    /// Every stderr line so far.
    pub(crate) stderr: Arc<Mutex<Vec<String>>>,
}

impl Enterprise {
    pub(crate) fn start(config: &ConfigDir) -> Self {
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(config.file())
            .args(["--http", "127.0.0.1:0", "--grpc", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn decision-gate-enterprise");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                kept.lock().expect("lines").push(line.clone());
                // The test may have stopped listening; keep draining so the server never blocks.
                let _ = tx.send(line);
            }
        });
        // The MCP line comes first, then the gRPC one.
        let (mut addr, mut grpc) = (None, None);
        while addr.is_none() || grpc.is_none() {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    panic!(
                        "the server did not start; stderr: {:?}",
                        lines.lock().expect("lines")
                    )
                });
            let listener = |rest: &str, end: char| -> SocketAddr {
                rest.split(end)
                    .next()
                    .expect("address")
                    .parse()
                    .expect("socket address")
            };
            if let Some(rest) = line.strip_prefix("decision-gate: serving MCP on http://") {
                addr = Some(listener(rest, '/'));
            } else if let Some(rest) = line.strip_prefix("decision-gate: serving gRPC on ") {
                grpc = Some(listener(rest, ' '));
            }
        }
        Self {
            child,
            addr: addr.expect("MCP address"),
            grpc: grpc.expect("gRPC address"),
            stderr: lines,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The HTTP status of `/readyz`.
    pub(crate) fn readyz(&self) -> u16 {
        self.readyz_answer().0
    }

    /// The HTTP status and body of `/readyz`.
    pub(crate) fn readyz_answer(&self) -> (u16, serde_json::Value) {
        let answer = reqwest::blocking::Client::new()
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(30))
            .send()
            .expect("readyz");
        let status = answer.status().as_u16();
        (status, answer.json().expect("a JSON body"))
    }

    /// Calls `tool` with `arguments`, as the bearer of `token` when given; the tool result.
    pub(crate) fn call(&self, token: Option<&str>, tool: &str, arguments: Value) -> Value {
        call(&self.url("/mcp"), token, tool, arguments)
    }
}

impl Drop for Enterprise {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One JSON-RPC `tools/call` over Streamable HTTP; the `result` object.
pub(crate) fn call(url: &str, token: Option<&str>, tool: &str, arguments: Value) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": tool, "arguments": arguments },
    });
    let mut req = reqwest::blocking::Client::new()
        .post(url)
        .timeout(Duration::from_secs(60))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    assert_eq!(status, 200, "{tool}: HTTP {status}: {text}");
    let reply: Value = serde_json::from_str(&text).expect("JSON-RPC response");
    assert!(reply.get("error").is_none(), "{tool}: {reply}");
    reply["result"].clone()
}

/// The structured content of a successful tool result.
pub(crate) fn ok(result: &Value) -> &Value {
    assert_eq!(result["isError"], json!(false), "tool failed: {result}");
    &result["structuredContent"]
}

/// The error kind of a failed tool result (`None` when it succeeded).
pub(crate) fn error_kind(result: &Value) -> Option<String> {
    if result["isError"] == json!(true) {
        result["structuredContent"]["error"]["kind"]
            .as_str()
            .map(str::to_owned)
    } else {
        None
    }
}

pub(crate) fn logical(n: u64) -> Value {
    json!({ "kind": "logical", "value": n })
}

/// `scenario_next` arguments for `run` of the cycle scenario in `tenant`.
pub(crate) fn next_args(tenant: u64, run: &str, trigger: &str, at: u64) -> Value {
    json!({ "scenario_id": "cycle", "request": {
        "run_id": run, "tenant_id": tenant, "namespace_id": 1, "trigger_id": trigger,
        "agent_id": "agent", "time": logical(at) } })
}

/// `scenario_start` arguments for `run` of the cycle scenario in `tenant`.
pub(crate) fn start_args(tenant: u64, run: &str) -> Value {
    json!({ "scenario_id": "cycle", "started_at": logical(0),
            "run_config": { "tenant_id": tenant, "namespace_id": 1, "run_id": run } })
}

/// The cycle scenario's spec.
pub(crate) fn cycle() -> Value {
    serde_json::from_str(CYCLE).expect("spec")
}
