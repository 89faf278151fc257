//! The abuse suite: one test per class of hostile input (Docs/security/threat-model.md). Each
//! drives the real binary the way a hostile caller would and checks that the abusive call is
//! answered within a bounded time with the named error, that the server's resident memory stays
//! bounded (read from `/proc`), and that a well-behaved client beside it is served throughout.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::support::{Server, call_body, post, unix};

/// The token of the abusive principal.
const MALLORY: &str = "mallory-token-0123456789";
/// The token of the well-behaved principal.
const ALICE: &str = "alice-token-0123456789";
/// How much the server's resident memory may grow during an abusive call.
const RSS_BUDGET_KIB: u64 = 64 * 1024;

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Bearer authentication with the two principals, then `extra`.
fn config(extra: &str) -> String {
    format!(
        r#"
[server.auth]
mode = "bearer"

[[server.auth.tokens]]
subject = "mallory"
token_sha256 = "{}"

[[server.auth.tokens]]
subject = "alice"
token_sha256 = "{}"

{extra}
"#,
        sha256_hex(MALLORY),
        sha256_hex(ALICE),
    )
}

/// A server with the two principals and `extra` configuration.
fn serve(extra: &str) -> Server {
    Server::start_with(Some(&config(extra)), |_| {})
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A tool call as `token`: (HTTP status, JSON body).
fn call(http: &Client, server: &Server, token: &str, tool: &str, arguments: Value) -> (u16, Value) {
    let (status, _, body) = post(
        http,
        &server.mcp_url(),
        call_body(1, tool, arguments),
        &[("authorization", &bearer(token))],
    );
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The `structuredContent` of an `isError` result.
fn tool_error(body: &Value) -> &Value {
    assert_eq!(body["result"]["isError"], true, "{body}");
    &body["result"]["structuredContent"]["error"]
}

/// A well-behaved client calling `providers_list` as alice from 127.0.0.1 in a loop until
/// stopped; it fails the test if any call is refused or slow.
struct Bystander {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, Duration)>>,
}

impl Bystander {
    fn start(server: &Server) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let url = server.mcp_url();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let http = Client::builder()
                .local_address(IpAddr::from([127, 0, 0, 1]))
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let (mut served, mut slowest) = (0, Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (status, _, body) = post(
                    &http,
                    &url,
                    call_body(1, "providers_list", json!({})),
                    &[("authorization", &bearer(ALICE))],
                );
                assert_eq!(status, 200, "the bystander was refused: {body}");
                assert!(body.contains("\"isError\":false"), "{body}");
                slowest = slowest.max(started.elapsed());
                served += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (served, slowest)
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the loop; checks it was served, each call within a second.
    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (served, slowest) = self.thread.take().unwrap().join().expect("bystander");
        assert!(served > 0, "the bystander was never served");
        assert!(
            slowest < Duration::from_secs(1),
            "the bystander waited {slowest:?}"
        );
    }
}

/// The call was refused as `invalid_input` with a message naming `what`.
fn assert_invalid(body: &Value, what: &str) {
    let error = tool_error(body);
    assert_eq!(error["kind"], "invalid_input", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(what), "{error}");
}

/// `started` was less than `limit` ago: the abusive call was answered in bounded time.
fn assert_within(started: Instant, limit: Duration) {
    let waited = started.elapsed();
    assert!(waited < limit, "answered after {waited:?}");
}

/// Resident memory grew by less than the budget since `before`.
fn assert_memory_bounded(server: &Server, before: u64) {
    let after = server.rss_kib();
    assert!(
        after.saturating_sub(before) < RSS_BUDGET_KIB,
        "resident memory grew from {before} KiB to {after} KiB"
    );
}

fn packets(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"packet_id": format!("p{i}"), "schema_id": "x", "content_type": "text/plain",
                       "payload": {"kind": "json", "value": "hi"}})
            })
            .collect(),
    )
}

fn spec(entry_packets: Value) -> Value {
    json!({
        "scenario_id": "wide", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "entry_packets": entry_packets,
                    "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "c",
                        "query": {"provider_id": "time", "check_id": "after", "params": {"timestamp": 0}},
                        "comparator": "equals", "expected": true}]
    })
}

/// Class 1, counts: 200 packets x 5,000 targets once grew the server by ~640 MB.
#[test]
fn counts_oversized_specs_and_starts_are_refused_at_once() {
    let server = serve("");
    let http = Client::new();
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);

    let started = Instant::now();
    let (_, body) = call(
        &http,
        &server,
        MALLORY,
        "scenario_define",
        json!({"spec": spec(packets(200))}),
    );
    let error = tool_error(&body);
    assert_eq!(error["kind"], "invalid_input");
    assert!(
        error["details"]
            .to_string()
            .contains("200 packets; the limit is 64"),
        "{error}"
    );
    let (_, body) = call(
        &http,
        &server,
        MALLORY,
        "scenario_define",
        json!({"spec": spec(packets(64))}),
    );
    assert_eq!(body["result"]["isError"], false, "{body}");
    let targets: Vec<Value> = (0..5000)
        .map(|i| json!({"kind": "agent", "agent_id": format!("a{i}")}))
        .collect();
    let (_, body) = call(
        &http,
        &server,
        MALLORY,
        "scenario_start",
        json!({"scenario_id": "wide", "started_at": unix(0),
               "run_config": {"tenant_id": 1, "namespace_id": 1, "run_id": "r",
                              "dispatch_targets": targets}}),
    );
    assert_invalid(&body, "5000 targets; the limit is 64");
    assert_within(started, Duration::from_secs(5));

    bystander.finish();
    assert_memory_bounded(&server, before);
}

/// Class 2, CPU: a precheck asserting 10,000 items against 10,000 expected ones is answered
/// at once; more items than the limit are refused before any comparator runs.
#[test]
fn cpu_large_set_comparisons_are_answered_at_once_and_larger_ones_refused() {
    let server = serve("[providers.env]\nallowlist = [\"HOME\"]\n");
    let http = Client::new();
    let items = |n: usize| -> Value { (0..n).map(|i| json!(format!("item-{i:06}"))).collect() };
    let set_spec = json!({
        "scenario_id": "sets", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                    "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "c",
                        "query": {"provider_id": "env", "check_id": "get", "params": {"key": "HOME"}},
                        "comparator": "contains", "expected": items(10_000)}]
    });
    let (_, body) = call(
        &http,
        &server,
        ALICE,
        "scenario_define",
        json!({"spec": set_spec}),
    );
    assert_eq!(body["result"]["isError"], false, "{body}");
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);

    let precheck = |asserted: Value| {
        json!({"scenario_id": "sets", "tenant_id": 1, "namespace_id": 1,
               "evidence": {"c": {"value": {"kind": "json", "value": asserted}}}})
    };
    let mut reversed = items(10_000);
    reversed.as_array_mut().unwrap().reverse();
    let started = Instant::now();
    let (_, body) = call(&http, &server, MALLORY, "precheck", precheck(reversed));
    assert_eq!(body["result"]["isError"], false, "{body}");
    assert_within(started, Duration::from_secs(5));

    let (_, body) = call(&http, &server, MALLORY, "precheck", precheck(items(10_001)));
    assert_invalid(&body, "10001 array items; the limit is 10000");

    bystander.finish();
    assert_memory_bounded(&server, before);
}

/// A raw HTTP/1 request from mallory whose body never comes: the headers declare 100 bytes,
/// 10 are sent.
fn stalled_body(server: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    let body = call_body(1, "providers_list", json!({}));
    write!(
        tcp,
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nauthorization: Bearer {MALLORY}\r\n\
         content-length: {}\r\n\r\n{}",
        server.addr,
        body.len() + 100,
        &body[..10]
    )
    .unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp
}

fn status_line(tcp: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Class 3, admission: stalled bodies take neither the shared in-flight budget nor more than
/// the principal's own share, and end at the body timeout; a silent connection or one that
/// never finishes its headers is closed at the header timeout.
#[test]
fn admission_stalled_requests_hold_only_their_own_share_and_time_out() {
    let server = serve(
        "[server.limits]\nmax_inflight = 2\nmax_inflight_per_principal = 3\n\
             body_timeout_ms = 1500\nheader_timeout_ms = 1000\n",
    );
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);

    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..3).map(|_| stalled_body(&server)).collect();
    std::thread::sleep(Duration::from_millis(200));
    // A fourth of mallory's is over the principal's share, refused at once.
    let http = Client::new();
    let (status, body) = call(&http, &server, MALLORY, "providers_list", json!({}));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["data"]["kind"], "rate_limited");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_inflight_per_principal"),
        "{body}"
    );
    // The stalled ones end at the body timeout with 408.
    for tcp in &mut stalled {
        let line = status_line(tcp);
        assert!(line.contains("408"), "{line}");
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Silent, and slow headers: closed at the header timeout.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let opened = Instant::now();
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap_or(0), 0, "closed");
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(slow, "POST /mcp HTTP/1.1\r\nhost: x\r\n").unwrap();
    let line = status_line(&mut slow);
    assert!(line.is_empty() || line.contains("408"), "{line}");
    assert_within(opened, Duration::from_secs(4));

    bystander.finish();
    assert_memory_bounded(&server, before);
    let audit = server.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["refusal"] == "body_timeout" && e["principal"] == "mallory"),
        "{audit:?}"
    );
}

/// Class 4, unauthenticated noise: a flood of bad tokens from one address costs a handful of
/// audit lines, not one per request; the address is then held back before its credentials are
/// tried, and its refusals are written as one event per window with their count.
#[test]
fn unauthenticated_noise_is_budgeted_per_source_and_aggregated() {
    let server =
        serve("[server.limits.auth_failures]\nper_minute = 1\nburst = 5\naudit_window_ms = 500\n");
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);
    let attacker = Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for i in 0..300 {
        let (status, _) = call(
            &attacker,
            &server,
            &format!("guess-{i:04}-0123456789"),
            "providers_list",
            json!({}),
        );
        statuses.push(status);
    }
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[6..].iter().all(|s| *s == 429), "{statuses:?}");
    // The windows close and the count is written.
    std::thread::sleep(Duration::from_millis(1500));
    bystander.finish();
    assert_memory_bounded(&server, before);

    let audit = server.audit();
    let from_attacker: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "access" && e["peer"] == "127.0.0.2")
        .collect();
    assert!(
        from_attacker.len() <= 8,
        "{} lines: {from_attacker:?}",
        from_attacker.len()
    );
    let counted: u64 = from_attacker
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .filter_map(|d| d.split(' ').next()?.parse::<u64>().ok())
        .sum();
    let individually = from_attacker
        .iter()
        .filter(|e| e["detail"] == "the bearer token is not recognised")
        .count() as u64;
    assert_eq!(individually, 5, "{from_attacker:?}");
    assert_eq!(
        counted + individually,
        300,
        "every refusal is accounted for"
    );
}

/// Class 3 over gRPC: streams whose one message never arrives hold only their principal's
/// share, end at the body timeout with `INVALID_ARGUMENT`, and another principal is served.
#[test]
fn admission_stalled_grpc_streams_hold_only_their_own_share() {
    use decision_gate_mcp::grpc::pb;
    let server = serve(
        "[server.limits]\nmax_inflight = 2\nmax_inflight_per_principal = 3\nbody_timeout_ms = 1500\n",
    );
    let before = server.rss_kib();
    crate::grpc::runtime().block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let started = Instant::now();
        let stalls: Vec<_> = (0..3)
            .map(|_| {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                tokio::spawn(async move {
                    grpc.ready().await.expect("ready");
                    let mut request =
                        tonic::Request::new(futures::stream::pending::<pb::ListProvidersRequest>());
                    request
                        .metadata_mut()
                        .insert("authorization", bearer(MALLORY).parse().unwrap());
                    grpc.client_streaming::<_, pb::ListProvidersRequest, pb::ListProvidersResponse, _>(
                        request,
                        http::uri::PathAndQuery::from_static(
                            "/decision_gate.v1.DecisionGate/ListProviders",
                        ),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let as_principal = |token: &'static str| {
            pb::decision_gate_client::DecisionGateClient::with_interceptor(
                channel.clone(),
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert("authorization", bearer(token).parse().expect("header"));
                    Ok(r)
                },
            )
        };
        // Alice is served while mallory's three streams stall; a fourth of mallory's is over
        // the principal's share.
        as_principal(ALICE)
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect("alice is served");
        let refused = as_principal(MALLORY)
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect_err("over mallory's share");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        for stall in stalls {
            let status = stall.await.unwrap().expect_err("the body never came");
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("body_timeout_ms"), "{status:?}");
        }
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "{waited:?}"
        );
    });
    assert_memory_bounded(&server, before);
}

/// Class 8, what leaks: `/metrics` honours the `Host` allowlist and, when configured, needs
/// credentials; a refused read is audited.
#[test]
fn metrics_need_an_allowed_host_and_credentials_when_configured() {
    let server = serve("[server.metrics]\nrequire_auth = true\n");
    let http = Client::new();
    let get = |host: Option<&str>, token: Option<&str>| {
        let mut request = http.get(server.url("/metrics"));
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(token) = token {
            request = request.header("authorization", bearer(token));
        }
        let response = request.send().expect("metrics");
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    };
    let (status, body) = get(Some("rebinding.example"), Some(ALICE));
    assert_eq!(status, 403, "{body}");
    let (status, body) = get(None, None);
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(None, Some("wrong-token-0123456789"));
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(None, Some(ALICE));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("decision_gate_requests_refused_total"),
        "{body}"
    );
    let audit = server.audit();
    assert!(
        audit
            .iter()
            .filter(|e| e["event"] == "access" && e["refusal"] == "unauthenticated")
            .count()
            >= 2,
        "{audit:?}"
    );
}

/// Class 5, providers: an external provider's answer over HTTP is capped as it arrives: of the
/// 2 MiB it sends, the server reads little more than its limit and refuses the answer before
/// parsing it (the condition is unknown with `provider_error`); its memory does not move.
#[test]
fn providers_an_oversized_http_answer_is_cut_off_as_it_arrives() {
    let provider = crate::providers::http_provider();
    let contract = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/deploys-contract.json"
    );
    let server = serve(&format!(
        "[[providers.mcp]]\nprovider_id = \"deploys\"\nurl = \"http://127.0.0.1:{}/mcp\"\n\
         contract = {contract:?}\nmax_response_bytes = 65536\ntimeout_ms = 30000\n",
        provider.port
    ));
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);
    let started = Instant::now();
    let (status, body) = call(
        &http,
        &server,
        MALLORY,
        "evidence_query",
        json!({
            "query": { "provider_id": "deploys", "check_id": "huge" },
            "context": { "tenant_id": 1, "namespace_id": 1, "run_id": "r", "scenario_id": "s",
                         "stage_id": "wait", "trigger_id": "q", "trigger_time": unix(1) } }),
    );
    assert_eq!(status, 200, "{body}");
    let answer = &body["result"]["structuredContent"]["result"];
    assert_eq!(answer["error"]["code"], "provider_error", "{body}");
    // Refused by the transport's cap, not by the size check on a parsed answer.
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("the answer is"), "{message}");
    assert_within(started, Duration::from_secs(40));
    bystander.finish();
    assert_memory_bounded(&server, before);
}

/// Class 6, runpack verify on a hostile directory: an artifact replaced by a FIFO (which would
/// block a reader forever) is refused as not a regular file, and `runpack verify` answers at
/// once with a failure.
#[test]
fn runpack_verify_refuses_a_fifo_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(crate::support::binary())
        .args(["quickstart", "--data-dir"])
        .arg(&data)
        .output()
        .expect("quickstart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = walk(&data.join("runpacks"))
        .into_iter()
        .find(|p| p.ends_with("manifest.json"))
        .expect("an exported runpack");
    let runpack = manifest.parent().unwrap().to_path_buf();
    let artifact = runpack.join("artifacts/triggers.json");
    std::fs::remove_file(&artifact).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&artifact)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let started = Instant::now();
    let out = std::process::Command::new(crate::support::binary())
        .args(["runpack", "verify"])
        .arg(&runpack)
        .output()
        .expect("verify");
    assert_within(started, Duration::from_secs(10));
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("not a regular file"), "{text}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

/// Class 7, files at rest: a serving server's data directory is its owner's alone, the audit
/// digest key included.
#[test]
fn files_at_rest_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let server = serve("");
    let http = Client::new();
    let (status, _) = call(&http, &server, ALICE, "providers_list", json!({}));
    assert_eq!(status, 200);
    let data = server.data_dir();
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in ["decision-gate.db", "audit.jsonl", "audit-digest.key"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
}

/// Class 3, connections: one source may hold only its share of open connections; the next is
/// closed as it is accepted, while another source is served throughout.
#[test]
fn connections_are_capped_per_source() {
    use tokio::io::AsyncReadExt as _;
    let server = serve(
        "[server.limits]\nmax_connections_per_source = 3\nheader_timeout_ms = 5000\n\
         [server.limits.auth_failures]\naudit_window_ms = 500\n",
    );
    let before = server.rss_kib();
    let bystander = Bystander::start(&server);
    crate::grpc::runtime().block_on(async {
        let connect = || async {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind("127.0.0.2:0".parse().unwrap()).expect("bind");
            socket.connect(server.addr).await.expect("connect")
        };
        // Three silent connections hold the source's share (until the header timeout).
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(connect().await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let mut fourth = connect().await;
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(3), fourth.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "the fourth connection is closed at once: {read:?}"
        );
        assert_within(started, Duration::from_secs(2));
        // The share comes back when a connection ends.
        drop(held.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fifth = connect().await;
        let waited = tokio::time::timeout(Duration::from_millis(500), fifth.read(&mut byte)).await;
        assert!(
            waited.is_err(),
            "the fifth connection is held open, not closed: {waited:?}"
        );
    });
    // The window closes; the refusal is in the trail once, with its count.
    std::thread::sleep(Duration::from_millis(1200));
    bystander.finish();
    assert_memory_bounded(&server, before);
    let audit = server.audit();
    let closed: Vec<&Value> = audit
        .iter()
        .filter(|e| e["refusal"] == "overloaded" && e["peer"] == "127.0.0.2")
        .collect();
    assert_eq!(closed.len(), 1, "{audit:?}");
    let detail = closed[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("1 connections closed"), "{detail}");
}
