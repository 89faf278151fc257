//! The harness: the real binary on a free port, the official clients, and raw HTTP.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

pub(crate) const THREE_STAGE: &str = include_str!("../../fixtures/three-stage.json");

/// The `decision-gate` binary cargo built for this workspace (next to `deps/` of this test).
pub(crate) fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let bin = dir.join(format!("decision-gate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p decision-gate-mcp` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// A running `decision-gate serve --http 127.0.0.1:0 --grpc 127.0.0.1:0`, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The gRPC listener.
    pub(crate) grpc_addr: SocketAddr,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) scheme: &'static str,
    /// The configuration file, when the server was given one.
    config: Option<PathBuf>,
}

/// Starts `decision-gate serve` on free ports with its data under `dir/data`; answers the
/// child, the MCP scheme and address, and the gRPC address once it prints them.
fn spawn(dir: &Path, config: Option<&Path>) -> (Child, &'static str, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(binary());
    cmd.arg("serve")
        .arg("--http")
        .arg("127.0.0.1:0")
        .arg("--grpc")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .env_remove("DECISION_GATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    let mut child = cmd.spawn().expect("spawn decision-gate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                // The test stopped listening; keep draining so the server never blocks.
                continue;
            }
        }
    });
    let mut seen = Vec::new();
    let mut mcp = None;
    let mut grpc = None;
    loop {
        if let (Some((scheme, addr)), Some(grpc)) = (mcp, grpc) {
            return (child, scheme, addr, grpc);
        }
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not start; stderr: {seen:?}");
        };
        if let Some(rest) = line.strip_prefix("decision-gate: serving MCP on ") {
            let (scheme, rest) = rest.split_once("://").expect("scheme");
            let addr: SocketAddr = rest
                .split('/')
                .next()
                .expect("address")
                .parse()
                .expect("socket address");
            mcp = Some((if scheme == "https" { "https" } else { "http" }, addr));
        } else if let Some(rest) = line.strip_prefix("decision-gate: serving gRPC on ") {
            let addr = rest.split(' ').next().expect("address");
            grpc = Some(addr.parse().expect("socket address"));
        }
        seen.push(line);
    }
}

impl Server {
    /// Starts a local-only server with no configuration file.
    pub(crate) fn start() -> Self {
        Self::start_with(None, |_| {})
    }

    /// Starts a server with `config` (TOML) written next to its data directory; `prepare` may
    /// add files (certificates) to the directory first.
    pub(crate) fn start_with(config: Option<&str>, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        prepare(dir.path());
        let config = config.map(|text| {
            let file = dir.path().join("decision-gate.toml");
            std::fs::write(&file, text).expect("write config");
            file
        });
        let (child, scheme, addr, grpc_addr) = spawn(dir.path(), config.as_deref());
        Self {
            child,
            addr,
            grpc_addr,
            dir,
            scheme,
            config,
        }
    }

    /// Kills the server with SIGKILL: no chance to flush, sync or clean up.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Starts the server again on the same data directory and configuration (after
    /// [`Server::kill`]); it listens on new ports.
    pub(crate) fn restart(&mut self) {
        let (child, scheme, addr, grpc_addr) = spawn(self.dir.path(), self.config.as_deref());
        self.child = child;
        self.scheme = scheme;
        self.addr = addr;
        self.grpc_addr = grpc_addr;
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        let host = if self.scheme == "https" {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        format!("{}://{host}{path}", self.scheme)
    }

    pub(crate) fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    /// Sends SIGTERM and waits for the exit, at most `patience`; `None` if it did not exit.
    pub(crate) fn terminate(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if let Some(exit) = self.child.try_wait().expect("wait") {
                return Some(exit);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's child processes, with their state letter (`Z` for one exited but not
    /// reaped), read from `/proc`.
    pub(crate) fn children(&self) -> Vec<(u32, char)> {
        let parent = self.pid();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // After the command name's closing parenthesis: state, then the parent's pid.
            let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
            if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
                found.push((pid, state));
            }
        }
        found
    }

    /// The server's resident memory in KiB, from `/proc/<pid>/status`.
    pub(crate) fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Every audit record written so far.
    pub(crate) fn audit(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("data/audit.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An official MCP client.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Sdk {
    Python,
    TypeScript,
}

pub(crate) fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run scripts/test.sh, which installs the official MCP clients")
    })
}

/// Runs one job through an official client and returns its transcript.
pub(crate) fn drive(sdk: Sdk, server: Value, calls: Value) -> Value {
    let job = json!({ "server": server, "calls": calls });
    let cmd = match sdk {
        Sdk::Python => {
            let mut c = Command::new(required_env("DG_PYTHON"));
            c.arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/clients/python/driver.py"
            ));
            c
        }
        Sdk::TypeScript => {
            let mut c = Command::new("node");
            c.arg(required_env("DG_TS_DRIVER"));
            c
        }
    };
    run_json(cmd, &job, &format!("{sdk:?} client"))
}

/// Runs a client program that reads one JSON job on stdin and prints one JSON document.
pub(crate) fn run_json(mut cmd: Command, job: &Value, what: &str) -> Value {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the {what}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write job");
    let out = child.wait_with_output().expect("client output");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The job's server entry for stdio: the binary itself, serving a fresh data directory.
pub(crate) fn stdio_server(data_dir: &Path) -> Value {
    json!({
        "command": binary(),
        "args": ["serve", "--stdio", "--data-dir", data_dir],
    })
}

/// The structured content of a successful tool result.
pub(crate) fn ok(result: &Value) -> &Value {
    assert_eq!(result["isError"], json!(false), "tool failed: {result}");
    &result["structuredContent"]
}

/// The error object of a failed tool result.
pub(crate) fn tool_error(result: &Value) -> &Value {
    assert_eq!(result["isError"], json!(true), "tool succeeded: {result}");
    &result["structuredContent"]["error"]
}

pub(crate) fn unix(ms: i64) -> Value {
    json!({ "kind": "unix_millis", "value": ms })
}

/// A raw JSON-RPC POST to `/mcp` with the headers an MCP client sends.
pub(crate) fn post(
    client: &reqwest::blocking::Client,
    url: &str,
    body: impl Into<reqwest::blocking::Body>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().unwrap_or_default())
}

/// A JSON-RPC `tools/call` body.
pub(crate) fn call_body(id: u64, tool: &str, arguments: Value) -> String {
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": { "name": tool, "arguments": arguments },
    })
    .to_string()
}
