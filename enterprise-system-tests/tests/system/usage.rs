//! Usage, quotas, plans and rate limits on the running enterprise server (ADR 0016): exact
//! quotas under 50 concurrent clients over two replicas, a replayed call counted once, Redis
//! stopped mid-test, a plan change on every replica, the usage API and a reproducible export.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tonic::Code;

use crate::grpc::client;
use crate::isolation::{TOKEN_A, auth};
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, block_on, config, cycle, error_kind,
    migrate_and_provision, next_args, ok, run, run_json, start_args,
};

/// A migrated, provisioned database configured with the two bearer tokens and `rest`.
fn setup(rest: &str) -> (ScratchDb, ConfigDir) {
    let db = ScratchDb::create(&PgServer::shared());
    let dir = ConfigDir::new(&config(&db, "", &format!("{}{rest}", auth())));
    migrate_and_provision(&dir);
    (db, dir)
}

/// Runs a command of the binary against `dir`'s configuration (inserted after the first two
/// words); panics unless it succeeds.
fn cli(dir: &ConfigDir, args: &[&str]) -> Value {
    let file = dir.file();
    let file = file.to_str().expect("utf-8 path");
    let split = args.len().min(2);
    let mut all: Vec<&str> = args[..split].to_vec();
    all.extend(["--json", "--config", file]);
    all.extend_from_slice(&args[split..]);
    let (code, doc) = run_json(&all);
    assert_eq!(code, Some(0), "{all:?}: {doc}");
    doc
}

/// Saves plan `id` from TOML `text` and puts tenant 1 on it.
fn plan(dir: &ConfigDir, id: &str, text: &str) {
    let path = dir.dir.path().join(format!("{id}.toml"));
    std::fs::write(&path, text).expect("plan file");
    cli(
        dir,
        &["plans", "put", id, "--file", path.to_str().expect("utf-8")],
    );
    cli(dir, &["plans", "assign", "--tenant", "1", "--plan", id]);
}

/// `quota set`: tenant 1's tool calls per day limited to `limit`.
fn day_tool_calls_limit(dir: &ConfigDir, limit: &str) {
    cli(
        dir,
        &[
            "quota",
            "set",
            "--tenant",
            "1",
            "--metric",
            "tool_calls",
            "--period",
            "day",
            "--limit",
            limit,
        ],
    );
}

/// One `tools/call` with an `Idempotency-Key`, as the bearer of `token`.
fn call_with_key(server: &Enterprise, token: &str, tool: &str, args: Value, key: &str) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": { "name": tool, "arguments": args },
    });
    let reply: Value = reqwest::blocking::Client::new()
        .post(server.url("/mcp"))
        .timeout(Duration::from_secs(60))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .header("authorization", format!("Bearer {token}"))
        .header("idempotency-key", key)
        .body(body.to_string())
        .send()
        .expect("request")
        .json()
        .expect("JSON-RPC response");
    reply["result"].clone()
}

fn status_args(run: &str) -> Value {
    json!({ "scenario_id": "cycle", "request": { "run_id": run, "tenant_id": 1,
            "namespace_id": 1, "requested_at": { "kind": "logical", "value": 1 } } })
}

fn count(db: &ScratchDb, query: &str) -> u64 {
    db.strings(query)[0].parse().expect("a count")
}

/// Today's events of `metric` in tenant 1's ledger.
fn ledger(db: &ScratchDb, metric: &str) -> u64 {
    count(
        db,
        &format!(
            "SELECT count(*)::text FROM usage_events WHERE tenant_id = 1 AND metric = '{metric}'
               AND recorded_at >= date_trunc('day', now(), 'UTC')"
        ),
    )
}

/// `clients` calls at once, alternating between the replicas; each answer's error kind (`None`
/// for a success).
fn at_once(
    replicas: &[Arc<Enterprise>; 2],
    clients: usize,
    call: impl Fn(&Enterprise, usize) -> Value + Send + Sync + 'static,
) -> Vec<(Option<String>, Value)> {
    let call = Arc::new(call);
    let start = Arc::new(std::sync::Barrier::new(clients));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (server, call, start) = (replicas[i % 2].clone(), call.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let answer = call(&server, i);
                (error_kind(&answer), answer)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect()
}

#[test]
fn fifty_clients_over_two_replicas_get_exactly_the_quota() {
    const QUOTA: u64 = 20;
    let (db, dir) = setup("");
    // The owner key first: a replica reads the API-key pepper when it starts.
    let owner = bootstrap_owner(&dir);
    let replicas = [
        Arc::new(Enterprise::start(&dir)),
        Arc::new(Enterprise::start(&dir)),
    ];
    ok(&replicas[0].call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    plan(
        &dir,
        "starter",
        "features = [\"grpc\"]\n[[quotas]]\nmetric = \"runs_started\"\nperiod = \"day\"\nlimit = 20\n",
    );

    // Writes: each start pays one `runs_started` in its own transaction.
    let answers = at_once(&replicas, 50, |server, i| {
        server.call(
            Some(TOKEN_A),
            "scenario_start",
            start_args(1, &format!("run-{i}")),
        )
    });
    let kinds = |answers: &[(Option<String>, Value)]| -> Vec<Option<String>> {
        answers.iter().map(|(kind, _)| kind.clone()).collect()
    };
    let started = answers.iter().filter(|(kind, _)| kind.is_none()).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|(kind, _)| kind.as_deref() == Some("quota_exceeded"))
        .collect();
    assert_eq!(
        started as u64,
        QUOTA,
        "exactly the quota succeeds: {:?}",
        kinds(&answers)
    );
    let a_run = format!(
        "run-{}",
        answers
            .iter()
            .position(|(kind, _)| kind.is_none())
            .expect("a started run")
    );
    assert_eq!(
        started + refused.len(),
        50,
        "every other call is refused by the quota"
    );
    assert_eq!(
        ledger(&db, "runs_started"),
        QUOTA,
        "the ledger holds one event per start"
    );
    assert_eq!(
        count(&db, "SELECT count(*)::text FROM runs WHERE tenant_id = 1"),
        QUOTA,
        "no refused start left a run"
    );
    let details = &refused[0].1["structuredContent"]["error"]["details"];
    assert_eq!(details["metric"], "runs_started");
    assert_eq!(details["period"], "day");
    assert_eq!(
        (&details["limit"], &details["used"]),
        (&json!(20), &json!(20))
    );
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms");
    let reset = details["reset_at_ms"].as_u64().expect("reset_at_ms");
    assert!(reset > now_ms && reset <= now_ms + 86_400_000, "{details}");
    assert!(refused[0].1["structuredContent"]["error"]["retry_after_ms"].as_u64() > Some(0));

    // Reads: each pays one `tool_calls`, recorded (and consumed) before it answers.
    let used = ledger(&db, "tool_calls");
    let limit = (used + QUOTA).to_string();
    day_tool_calls_limit(&dir, &limit);
    let answers = at_once(&replicas, 50, move |server, _| {
        server.call(Some(TOKEN_A), "scenario_status", status_args(&a_run))
    });
    let read = answers.iter().filter(|(kind, _)| kind.is_none()).count();
    assert_eq!(
        read as u64,
        QUOTA,
        "exactly the quota's reads succeed: {:?}",
        kinds(&answers)
    );
    assert!(
        answers
            .iter()
            .all(|(kind, _)| kind.is_none() || kind.as_deref() == Some("quota_exceeded")),
        "{:?}",
        kinds(&answers)
    );
    assert_eq!(
        ledger(&db, "tool_calls"),
        used + QUOTA,
        "one event per successful read, none for a refused one"
    );

    // The usage API says the same, to the tenant's administrator.
    let usage = admin_usage(&replicas[1], &owner);
    let quota = |metric: &str| {
        usage["quotas"]
            .as_array()
            .expect("quotas")
            .iter()
            .find(|q| q["metric"] == metric)
            .cloned()
            .expect("quota")
    };
    assert_eq!(usage["plan"], "starter");
    assert_eq!(quota("runs_started")["used"], json!(QUOTA));
    assert_eq!(quota("tool_calls")["used"], json!(used + QUOTA));
    assert_eq!(usage["counters"]["runs_started"]["day"], json!(QUOTA));
}

/// Organisation 1's owner key.
fn bootstrap_owner(dir: &ConfigDir) -> String {
    let file = dir.file();
    let (code, doc) = run_json(&[
        "bootstrap",
        "--json",
        "--config",
        file.to_str().expect("utf-8"),
        "--organisation",
        "1",
        "--name",
        "acme",
    ]);
    assert_eq!(code, Some(0), "{doc}");
    doc["key"].as_str().expect("key").to_owned()
}

/// `GET /admin/v1/tenants/1/usage` as `owner`.
fn admin_usage(server: &Enterprise, owner: &str) -> Value {
    let answer = reqwest::blocking::Client::new()
        .get(server.url("/admin/v1/tenants/1/usage"))
        .bearer_auth(owner)
        .timeout(Duration::from_secs(30))
        .send()
        .expect("usage");
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().expect("usage body")
}

#[test]
fn a_replayed_call_counts_once_and_answers_the_same() {
    let (db, dir) = setup("");
    let first = Enterprise::start(&dir);
    let second = Enterprise::start(&dir);
    ok(&first.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    ok(&first.call(Some(TOKEN_A), "scenario_start", start_args(1, "run")));
    let key = "retry-me-1";
    let answered = call_with_key(
        &first,
        TOKEN_A,
        "scenario_next",
        next_args(1, "run", "t-1", 1),
        key,
    );
    let decided = ok(&answered).clone();
    // The replica dies after committing; its answer never reached the client, which retries
    // on another replica with the same key, now with the day's calls at their quota.
    drop(first);
    let used = ledger(&db, "tool_calls").to_string();
    day_tool_calls_limit(&dir, &used);
    let replayed = call_with_key(
        &second,
        TOKEN_A,
        "scenario_next",
        next_args(1, "run", "t-1", 1),
        key,
    );
    assert_eq!(
        ok(&replayed),
        &decided,
        "the replay answers the recorded decision, within a full quota"
    );
    let counted = db.strings(&format!(
        "SELECT metric || '=' || count(*) FROM usage_events
          WHERE tenant_id = 1 AND idempotency_key LIKE '%/client/scenario_next/{key}/%'
          GROUP BY metric ORDER BY metric"
    ));
    assert_eq!(counted, vec!["tool_calls=1".to_owned()], "counted once");
    assert_eq!(
        count(
            &db,
            "SELECT count(*)::text FROM run_entries WHERE tenant_id = 1 AND trigger_id = 't-1'"
        ),
        1
    );
    // A new call (a new key) is over the quota.
    assert_eq!(
        error_kind(&call_with_key(
            &second,
            TOKEN_A,
            "scenario_next",
            next_args(1, "run", "t-2", 2),
            "another"
        )),
        Some("quota_exceeded".to_owned())
    );
}

/// A private `redis-server` on a free port, stopped on drop (or by the test).
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let binary = std::env::var("DG_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {binary} (scripts/redis.sh finds it): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Calls `scenario_status` `n` times in a row; how many were admitted, and the last refusal.
fn burst(server: &Enterprise, n: usize) -> (usize, Option<Value>) {
    let mut admitted = 0;
    let mut refusal = None;
    for _ in 0..n {
        let answer = server.call(Some(TOKEN_A), "scenario_status", status_args("run"));
        match error_kind(&answer).as_deref() {
            None => admitted += 1,
            Some("rate_limited") => refusal = Some(answer["structuredContent"]["error"].clone()),
            other => panic!("unexpected answer {other:?}: {answer}"),
        }
    }
    (admitted, refusal)
}

#[test]
fn redis_stopped_mid_test_limits_stay_enforced_locally_and_audited() {
    let mut redis = Redis::start();
    let (db, dir) = setup(&format!(
        "[usage]\nredis_url = \"redis://127.0.0.1:{}\"\nredis_timeout_ms = 200\n\
         rates = {{ credential = {{ per_second = 1, burst = 4 }} }}\n",
        redis.port
    ));
    let one = Enterprise::start(&dir);
    let two = Enterprise::start(&dir);
    ok(&one.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    ok(&one.call(Some(TOKEN_A), "scenario_start", start_args(1, "run")));
    // Shared: the credential's burst of 4 is spent across both replicas together (two calls
    // above, the rest here; one more may have refilled at 1/s).
    let (first, _) = burst(&one, 2);
    let (second, refusal) = burst(&two, 4);
    assert!(
        first + second <= 3,
        "the replicas share one rate: {first} + {second}"
    );
    let refusal = refusal.expect("a rate-limit refusal");
    assert!(refusal["retry_after_ms"].as_u64() >= Some(1), "{refusal}");
    assert_eq!(refusal["retryable"], json!(true));

    redis.stop();
    // Each replica now limits on its own: its local burst, then refusals; never unlimited.
    for server in [&one, &two] {
        let (admitted, refusal) = burst(server, 10);
        assert!(
            (1..=5).contains(&admitted),
            "a replica without Redis admitted {admitted} of 10"
        );
        assert!(refusal.is_some(), "and then refused");
    }
    // The loss is in the deployment's audit trail (once per replica) and in the metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lost = count(
            &db,
            "SELECT count(*)::text FROM deployment_audit_events
              WHERE event_json::jsonb ->> 'event' = 'rate_limiter_shared_lost'",
        );
        if lost == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{lost} loss events recorded, expected 2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = reqwest::blocking::Client::new()
        .get(one.url("/metrics"))
        .bearer_auth(TOKEN_A)
        .send()
        .expect("metrics")
        .text()
        .expect("metrics text");
    assert!(
        metrics.contains("decision_gate_fallbacks_total{component=\"rate_limit_redis\"}"),
        "{metrics}"
    );
}

#[test]
fn a_plan_change_holds_on_the_next_call_on_every_replica() {
    let (_db, dir) = setup("");
    let replicas = [Enterprise::start(&dir), Enterprise::start(&dir)];
    ok(&replicas[0].call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    ok(&replicas[0].call(Some(TOKEN_A), "scenario_start", start_args(1, "run")));
    let generous = "features = [\"grpc\"]\n[[quotas]]\nmetric = \"tool_calls\"\nperiod = \"month\"\nlimit = 100000\n";
    plan(&dir, "team", generous);
    let grpc_status = |server: &Enterprise| {
        block_on(async {
            let mut c = client(server, TOKEN_A).await;
            c.get_run_status(decision_gate_system_tests::grpc_pb::GetRunStatusRequest {
                scenario_id: "cycle".into(),
                tenant_id: 1,
                namespace_id: 1,
                run_id: "run".into(),
                correlation_id: None,
            })
            .await
        })
    };
    for server in &replicas {
        ok(&server.call(Some(TOKEN_A), "scenario_status", status_args("run")));
        grpc_status(server).expect("gRPC is in the plan");
    }

    // The plan's quota drops below what is used: the next call on each replica is refused.
    plan(
        &dir,
        "team",
        "features = [\"grpc\"]\n[[quotas]]\nmetric = \"tool_calls\"\nperiod = \"month\"\nlimit = 1\n",
    );
    for server in &replicas {
        let answer = server.call(Some(TOKEN_A), "scenario_status", status_args("run"));
        assert_eq!(
            error_kind(&answer),
            Some("quota_exceeded".to_owned()),
            "{answer}"
        );
    }

    // The plan drops gRPC (and lifts the quota): the next gRPC call on each replica is denied
    // with the reason, MCP calls pass.
    plan(&dir, "team", "features = []\n");
    for server in &replicas {
        let refused = grpc_status(server).expect_err("gRPC left the plan");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("feature_disabled"),
            "{refused:?}"
        );
        ok(&server.call(Some(TOKEN_A), "scenario_status", status_args("run")));
    }
}

#[test]
fn a_usage_export_is_reproducible_byte_for_byte() {
    let (db, dir) = setup("");
    let server = Enterprise::start(&dir);
    ok(&server.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    for i in 0..5 {
        ok(&server.call(
            Some(TOKEN_A),
            "scenario_start",
            start_args(1, &format!("r{i}")),
        ));
    }
    let to = db
        .strings("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        [0]
    .clone();
    let export = |name: &str| {
        let out = dir.dir.path().join(name);
        let doc = cli(
            &dir,
            &[
                "usage",
                "export",
                "--from",
                "2000-01-01T00:00:00Z",
                "--to",
                &to,
                "--out",
                out.to_str().expect("utf-8"),
            ],
        );
        let manifest = std::fs::read(format!("{}.manifest.json", out.display())).expect("manifest");
        (std::fs::read(&out).expect("export"), doc, manifest)
    };
    let (first, doc, first_manifest) = export("usage-1.jsonl");
    // More calls after the window's end change nothing in it.
    ok(&server.call(Some(TOKEN_A), "scenario_start", start_args(1, "later")));
    let (second, _, second_manifest) = export("usage-2.jsonl");
    assert_eq!(first, second, "the same window, the same bytes");
    // Only the file name differs between the two manifests.
    assert_eq!(
        String::from_utf8(first_manifest)
            .expect("utf-8")
            .replace("usage-1", "usage-2"),
        String::from_utf8(second_manifest).expect("utf-8")
    );
    let manifest = &doc["manifest"];
    let lines = first
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(manifest["count"], json!(lines));
    assert_eq!(
        manifest["count"],
        json!(count(
            &db,
            &format!("SELECT count(*)::text FROM usage_events WHERE recorded_at < '{to}'")
        ))
    );
    assert_eq!(
        manifest["blake3"],
        json!(blake3::hash(&first).to_hex().to_string())
    );
    assert_eq!(
        manifest["sha256"],
        json!(crate::support::sha256_hex_bytes(&first))
    );
    // A window that has not ended is refused.
    let out = run(&[
        "usage",
        "export",
        "--config",
        dir.file().to_str().expect("utf-8"),
        "--from",
        "2000-01-01T00:00:00Z",
        "--to",
        "2999-01-01T00:00:00Z",
        "--out",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in the future"));
}
