//! The gRPC API against the real binary: the parity suite (the same scenario through the
//! official MCP client and through gRPC gives the same decisions, run state and runpack root
//! hash), error kinds that correspond, bad input, authentication, health, reflection (v1 and
//! v1alpha, through tonic and through Python's `grpcio-reflection`) and `WatchRun`.

use decision_gate_mcp::grpc::pb::{self, decision_gate_client::DecisionGateClient};
use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::clients::first_session;
use crate::support::{Sdk, Server, THREE_STAGE, drive, ok, required_env, run_json, tool_error};

type Client = DecisionGateClient<Channel>;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn channel(server: &Server) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

pub(crate) async fn client(server: &Server) -> Client {
    DecisionGateClient::new(channel(server).await)
}

fn unix(ms: i64) -> Option<pb::Timestamp> {
    Some(pb::Timestamp {
        kind: Some(pb::timestamp::Kind::UnixMillis(ms)),
    })
}

/// A scheduler tick on `run-1`.
fn tick(trigger: &str, at: i64) -> pb::TriggerRequest {
    pb::TriggerRequest {
        scenario_id: "release-train".into(),
        tenant_id: 1,
        namespace_id: 1,
        run_id: "run-1".into(),
        trigger_id: trigger.into(),
        kind: pb::TriggerKind::Tick.into(),
        time: unix(at),
        source_id: "scheduler".into(),
        payload: None,
        correlation_id: None,
    }
}

fn next(trigger: &str, at: i64) -> pb::NextRequest {
    pb::NextRequest {
        scenario_id: "release-train".into(),
        tenant_id: 1,
        namespace_id: 1,
        run_id: "run-1".into(),
        trigger_id: trigger.into(),
        agent_id: "agent-7".into(),
        time: unix(at),
        ..Default::default()
    }
}

/// What both transports must agree on about a decision, in the MCP JSON shape.
fn mcp_decision(d: &Value) -> Value {
    json!({
        "decision_id": d["decision_id"], "seq": d["seq"], "trigger_id": d["trigger_id"],
        "stage_id": d["stage_id"], "kind": d["outcome"]["kind"],
        "to": d["outcome"]["to_stage"].as_str().or(d["outcome"]["stage_id"].as_str()),
        "unmet": d["outcome"]["summary"]["unmet_gates"],
    })
}

fn grpc_decision(d: &pb::Decision) -> Value {
    use pb::decision_outcome::Kind;
    let (kind, to, unmet) = match d.outcome.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(Kind::Start(s)) => ("start", Some(s.stage_id.clone()), Value::Null),
        Some(Kind::Complete(c)) => ("complete", Some(c.stage_id.clone()), Value::Null),
        Some(Kind::Advance(a)) => ("advance", Some(a.to_stage.clone()), Value::Null),
        Some(Kind::Hold(h)) => (
            "hold",
            None,
            json!(h.summary.as_ref().map(|s| s.unmet_gates.clone())),
        ),
        Some(Kind::Fail(_)) => ("fail", None, Value::Null),
        None => ("none", None, Value::Null),
    };
    json!({
        "decision_id": d.decision_id, "seq": d.seq, "trigger_id": d.trigger_id,
        "stage_id": d.stage_id, "kind": kind, "to": to, "unmet": unmet,
    })
}

fn status_name(status: i32) -> &'static str {
    match pb::RunStatus::try_from(status) {
        Ok(pb::RunStatus::Active) => "active",
        Ok(pb::RunStatus::Completed) => "completed",
        Ok(pb::RunStatus::Failed) => "failed",
        _ => "unspecified",
    }
}

fn grpc_packets(packets: &[pb::Packet]) -> Value {
    packets
        .iter()
        .map(|p| {
            let e = p.envelope.as_ref().expect("envelope");
            json!([e.packet_id, e.content_hash.as_ref().expect("hash").value])
        })
        .collect()
}

fn mcp_packets(packets: &Value) -> Value {
    packets
        .as_array()
        .expect("packets")
        .iter()
        .map(|p| {
            json!([
                p["envelope"]["packet_id"],
                p["envelope"]["content_hash"]["value"]
            ])
        })
        .collect()
}

/// The MCP client's first session (define, start, three nexts with a repeat, submit, tick,
/// next, status, export) reduced to what the transports must agree on.
fn mcp_observations(results: &[Value]) -> Vec<Value> {
    let step = |r: &Value| {
        let v = ok(r);
        json!({ "decision": mcp_decision(&v["decision"]), "status": v["status"],
                "packets": mcp_packets(&v["packets"]) })
    };
    let status = ok(&results[8]);
    let export = ok(&results[9]);
    let mut out = vec![json!(ok(&results[0])["spec_hash"]["value"])];
    out.extend(results[1..5].iter().map(step));
    out.push(json!(ok(&results[5])["record"]["content_hash"]["value"]));
    out.extend(results[6..8].iter().map(step));
    out.push(json!({
        "status": status["status"], "current_stage_id": status["current_stage_id"],
        "revision": status["revision"], "issued_packet_ids": status["issued_packet_ids"],
        "last": mcp_decision(&status["last_decision"]),
    }));
    out.push(json!({
        "root_hash": export["manifest"]["integrity"]["root_hash"]["value"],
        "failures": export["report"]["failures"],
    }));
    out
}

/// The same session through gRPC.
async fn grpc_observations(c: &mut Client) -> Vec<Value> {
    let step = |r: pb::TriggerResponse| {
        json!({
            "decision": grpc_decision(r.decision.as_ref().expect("decision")),
            "status": status_name(r.status),
            "packets": grpc_packets(&r.packets),
        })
    };
    let spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
    let defined = c
        .define_scenario(pb::DefineScenarioRequest {
            spec_json: spec.to_string(),
        })
        .await
        .expect("define")
        .into_inner();
    let started = c
        .start_run(pb::StartRunRequest {
            scenario_id: "release-train".into(),
            tenant_id: 1,
            namespace_id: 1,
            run_id: "run-1".into(),
            started_at: unix(0),
            dispatch_targets: vec![pb::DispatchTarget {
                kind: Some(pb::dispatch_target::Kind::AgentId("agent-7".into())),
            }],
        })
        .await
        .expect("start")
        .into_inner();
    let mut out = vec![
        json!(defined.spec_hash.expect("hash").value),
        json!({
            "decision": grpc_decision(started.decision.as_ref().expect("decision")),
            "status": status_name(started.status),
            "packets": grpc_packets(&started.packets),
        }),
    ];
    for (trigger, at) in [("next-1", 500), ("next-2", 1500), ("next-2", 1500)] {
        out.push(step(
            c.next(next(trigger, at)).await.expect("next").into_inner(),
        ));
    }
    let submitted = c
        .submit(pb::SubmitRequest {
            scenario_id: "release-train".into(),
            tenant_id: 1,
            namespace_id: 1,
            run_id: "run-1".into(),
            submission_id: "build-log".into(),
            payload: Some(pb::Payload {
                kind: Some(pb::payload::Kind::Json(r#"{"log":"ok"}"#.into())),
            }),
            content_type: "application/json".into(),
            submitted_at: unix(1600),
            correlation_id: None,
        })
        .await
        .expect("submit")
        .into_inner();
    out.push(json!(
        submitted
            .record
            .expect("record")
            .content_hash
            .expect("hash")
            .value
    ));
    let ticked = c
        .trigger(tick("tick-3", 2500))
        .await
        .expect("trigger")
        .into_inner();
    out.push(step(ticked));
    out.push(step(
        c.next(next("next-4", 2600))
            .await
            .expect("next")
            .into_inner(),
    ));
    let status = c
        .get_run_status(pb::GetRunStatusRequest {
            scenario_id: "release-train".into(),
            tenant_id: 1,
            namespace_id: 1,
            run_id: "run-1".into(),
            correlation_id: None,
        })
        .await
        .expect("status")
        .into_inner();
    out.push(json!({
        "status": status_name(status.status), "current_stage_id": status.current_stage_id,
        "revision": status.revision, "issued_packet_ids": status.issued_packet_ids,
        "last": grpc_decision(status.last_decision.as_ref().expect("last decision")),
    }));
    let export = c
        .export_runpack(pb::ExportRunpackRequest {
            tenant_id: 1,
            namespace_id: 1,
            scenario_id: "release-train".into(),
            run_id: "run-1".into(),
            generated_at: unix(3000),
            include_verification: true,
        })
        .await
        .expect("export")
        .into_inner();
    let manifest: Value = serde_json::from_str(&export.manifest_json).expect("manifest JSON");
    let report: Value =
        serde_json::from_str(export.report_json.as_deref().expect("report")).expect("report JSON");
    out.push(json!({
        "root_hash": manifest["integrity"]["root_hash"]["value"],
        "failures": report["failures"],
    }));
    out
}

/// Runs calls through the Python grpcio driver (stubs generated from `proto/` at test time).
fn python_grpc(server: &Server, calls: Value) -> Vec<Value> {
    let job = json!({
        "target": server.grpc_addr.to_string(),
        "proto_root": concat!(env!("CARGO_MANIFEST_DIR"), "/../proto"),
        "calls": calls,
    });
    let mut cmd = std::process::Command::new(required_env("DG_PYTHON"));
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/clients/python/grpc_driver.py"
    ));
    let v = run_json(cmd, &job, "Python gRPC client");
    v["results"].as_array().expect("results").clone()
}

/// A decision in protobuf JSON (64-bit integers as strings, outcome keyed by its kind), in the
/// shape [`mcp_decision`] gives.
fn proto_json_decision(d: &Value) -> Value {
    let outcome = d["outcome"].as_object().expect("outcome");
    let (kind, body) = outcome.iter().next().expect("outcome kind");
    json!({
        "decision_id": d["decision_id"],
        "seq": d["seq"].as_str().and_then(|s| s.parse::<u64>().ok()),
        "trigger_id": d["trigger_id"], "stage_id": d["stage_id"], "kind": kind,
        "to": body["to_stage"].as_str().or(body["stage_id"].as_str()),
        "unmet": body["summary"]["unmet_gates"],
    })
}

fn proto_json_status(status: &Value) -> Value {
    json!(match status.as_str() {
        Some("RUN_STATUS_ACTIVE") => "active",
        Some("RUN_STATUS_COMPLETED") => "completed",
        Some("RUN_STATUS_FAILED") => "failed",
        _ => "unspecified",
    })
}

fn proto_json_packets(packets: &Value) -> Value {
    packets
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    json!([
                        p["envelope"]["packet_id"],
                        p["envelope"]["content_hash"]["value"]
                    ])
                })
                .collect()
        })
        .unwrap_or_else(|| json!([]))
}

/// The first session through the Python grpcio client, reduced like the others.
fn python_grpc_observations(server: &Server) -> Vec<Value> {
    let spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
    let scope = json!({ "scenario_id": "release-train", "tenant_id": 1, "namespace_id": 1, "run_id": "run-1" });
    let with = |extra: Value| {
        let mut v = scope.clone();
        v.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        v
    };
    let next = |trigger: &str, at: i64| {
        json!({ "rpc": "Next", "request": with(json!({
            "trigger_id": trigger, "agent_id": "agent-7", "time": { "unix_millis": at.to_string() } })) })
    };
    let r = python_grpc(
        server,
        json!([
            { "rpc": "DefineScenario", "request": { "spec_json": spec.to_string() } },
            { "rpc": "StartRun", "request": with(json!({
                "started_at": { "unix_millis": "0" }, "dispatch_targets": [{ "agent_id": "agent-7" }] })) },
            next("next-1", 500),
            next("next-2", 1500),
            next("next-2", 1500),
            { "rpc": "Submit", "request": with(json!({
                "submission_id": "build-log", "payload": { "json": "{\"log\":\"ok\"}" },
                "content_type": "application/json", "submitted_at": { "unix_millis": "1600" } })) },
            { "rpc": "Trigger", "request": with(json!({
                "trigger_id": "tick-3", "kind": "TRIGGER_KIND_TICK", "time": { "unix_millis": "2500" },
                "source_id": "scheduler" })) },
            next("next-4", 2600),
            { "rpc": "GetRunStatus", "request": scope.clone() },
            { "rpc": "ExportRunpack", "request": with(json!({
                "generated_at": { "unix_millis": "3000" }, "include_verification": true })) },
            { "health": "decision_gate.v1.DecisionGate" },
        ]),
    );
    let step = |v: &Value| {
        json!({ "decision": proto_json_decision(&v["decision"]), "status": proto_json_status(&v["status"]),
                "packets": proto_json_packets(&v["packets"]) })
    };
    let status = &r[8];
    let manifest: Value = serde_json::from_str(r[9]["manifest_json"].as_str().expect("manifest"))
        .expect("manifest JSON");
    let report: Value =
        serde_json::from_str(r[9]["report_json"].as_str().expect("report")).expect("report JSON");
    assert_eq!(r[10]["health"], "SERVING", "{r:?}");
    let mut out = vec![r[0]["spec_hash"]["value"].clone()];
    out.extend(r[1..5].iter().map(step));
    out.push(r[5]["record"]["content_hash"]["value"].clone());
    out.extend(r[6..8].iter().map(step));
    out.push(json!({
        "status": proto_json_status(&status["status"]), "current_stage_id": status["current_stage_id"],
        "revision": status["revision"].as_str().and_then(|s| s.parse::<u64>().ok()),
        "issued_packet_ids": status["issued_packet_ids"],
        "last": proto_json_decision(&status["last_decision"]),
    }));
    out.push(json!({
        "root_hash": manifest["integrity"]["root_hash"]["value"],
        "failures": report["failures"],
    }));
    out
}

#[test]
fn the_same_scenario_through_mcp_and_grpc_gives_the_same_decisions_state_and_root_hash() {
    let mcp_server = Server::start();
    let target = json!({ "url": mcp_server.mcp_url() });
    let transcript = drive(Sdk::Python, target, first_session());
    let mcp = mcp_observations(transcript["results"].as_array().expect("results"));

    let grpc_server = Server::start();
    let grpc = runtime().block_on(async {
        let mut c = client(&grpc_server).await;
        grpc_observations(&mut c).await
    });
    let python_server = Server::start();
    let python = python_grpc_observations(&python_server);
    for (client, observed) in [("tonic", &grpc), ("grpcio", &python)] {
        assert_eq!(mcp.len(), observed.len(), "{client}");
        for (i, (m, g)) in mcp.iter().zip(observed).enumerate() {
            assert_eq!(m, g, "{client}, step {i}");
        }
    }
    let export = mcp.last().expect("export");
    assert_eq!(export["failures"], json!([]));
    assert!(
        export["root_hash"].as_str().is_some_and(|h| h.len() == 64),
        "{export}"
    );
    // The run completed: a finished run's decision says so on both sides.
    assert_eq!(grpc[8]["status"], "completed");
}

#[test]
fn error_kinds_correspond_and_bad_input_names_the_field() {
    let server = Server::start();
    let transcript = drive(
        Sdk::Python,
        json!({ "url": server.mcp_url() }),
        json!([
            { "tool": "scenario_status", "arguments": { "scenario_id": "nope",
              "request": { "run_id": "r", "tenant_id": 1, "namespace_id": 1 } } },
            { "tool": "scenarios_list", "arguments": { "tenant_id": 0, "namespace_id": 1 } },
        ]),
    );
    let r = transcript["results"].as_array().expect("results");
    let mcp_kinds = [
        tool_error(&r[0])["kind"].clone(),
        tool_error(&r[1])["kind"].clone(),
    ];
    runtime().block_on(async {
        let mut c = client(&server).await;
        let missing = c
            .get_run_status(pb::GetRunStatusRequest {
                scenario_id: "nope".into(),
                tenant_id: 1,
                namespace_id: 1,
                run_id: "r".into(),
                correlation_id: None,
            })
            .await
            .expect_err("unknown run");
        assert_eq!(missing.code(), tonic::Code::NotFound);
        assert_eq!(
            missing.metadata().get("dg-error-kind").expect("kind"),
            mcp_kinds[0].as_str().expect("kind")
        );
        let bad_tenant = c
            .list_scenarios(pb::ListRequest {
                tenant_id: 0,
                namespace_id: 1,
                ..Default::default()
            })
            .await
            .expect_err("tenant 0");
        assert_eq!(bad_tenant.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            bad_tenant.metadata().get("dg-error-kind").expect("kind"),
            mcp_kinds[1].as_str().expect("kind")
        );
        assert!(bad_tenant.message().contains("tenant_id"), "{bad_tenant:?}");

        // Invalid JSON inside a *_json field, a missing timestamp, an unknown enum value.
        let bad_json = c
            .define_scenario(pb::DefineScenarioRequest {
                spec_json: "{".into(),
            })
            .await
            .expect_err("bad JSON");
        assert_eq!(bad_json.code(), tonic::Code::InvalidArgument);
        assert!(
            bad_json
                .message()
                .starts_with("invalid arguments: spec_json:"),
            "{bad_json:?}"
        );
        let no_time = c
            .next(pb::NextRequest {
                time: None,
                ..next("t", 0)
            })
            .await
            .expect_err("no time");
        assert_eq!(no_time.code(), tonic::Code::InvalidArgument);
        assert_eq!(no_time.message(), "invalid arguments: time: required");
        let unknown_kind = c
            .trigger(pb::TriggerRequest {
                kind: 42,
                ..tick("t", 0)
            })
            .await
            .expect_err("unknown kind");
        assert_eq!(unknown_kind.code(), tonic::Code::InvalidArgument);
        assert!(
            unknown_kind
                .message()
                .starts_with("invalid arguments: kind:"),
            "{unknown_kind:?}"
        );
        // Conversion failures carry their kind and are audited, like bad MCP arguments.
        for refused in [&bad_json, &no_time, &unknown_kind] {
            assert_eq!(
                refused.metadata().get("dg-error-kind").expect("kind"),
                "invalid_input",
                "{refused:?}"
            );
        }
        // Nothing was written by any of them.
        let listed = c
            .list_scenarios(pb::ListRequest {
                tenant_id: 1,
                namespace_id: 1,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        assert!(listed.items.is_empty());
        assert_eq!(listed.next_token, None, "the last page has no next token");
    });
    let audit = server.audit();
    let refused: Vec<&str> = audit
        .iter()
        .filter(|e| {
            e["event"] == "access" && e["transport"] == "grpc" && e["refusal"] == "invalid_request"
        })
        .filter_map(|e| e["tool"].as_str())
        .collect();
    assert_eq!(
        refused,
        [
            "scenarios_list",
            "scenario_define",
            "scenario_next",
            "scenario_trigger"
        ],
        "{audit:?}"
    );
}

/// Defines the three-stage scenario, starts `run-1` and watches it after decision `after_seq`.
async fn start_and_watch(c: &mut Client, after_seq: u64) -> tonic::Streaming<pb::Decision> {
    let spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
    c.define_scenario(pb::DefineScenarioRequest {
        spec_json: spec.to_string(),
    })
    .await
    .expect("define");
    c.start_run(pb::StartRunRequest {
        scenario_id: "release-train".into(),
        tenant_id: 1,
        namespace_id: 1,
        run_id: "run-1".into(),
        started_at: unix(0),
        dispatch_targets: Vec::new(),
    })
    .await
    .expect("start");
    c.watch_run(pb::WatchRunRequest {
        scenario_id: "release-train".into(),
        tenant_id: 1,
        namespace_id: 1,
        run_id: "run-1".into(),
        after_seq,
    })
    .await
    .expect("watch")
    .into_inner()
}

/// `WatchRun` streams are bounded per principal and in time (class 3 of the threat model): a
/// third stream of one principal is refused, an idle one ends with `DEADLINE_EXCEEDED`, and its
/// slot comes back.
#[test]
fn watch_run_streams_are_capped_per_principal_and_end_when_idle() {
    let server = Server::start_with(
        Some("[server.limits.watch]\nmax_per_principal = 2\nidle_timeout_ms = 700\n"),
        |_| {},
    );
    runtime().block_on(async {
        let mut c = client(&server).await;
        let mut first = start_and_watch(&mut c, 0).await;
        let watch = |after_seq| pb::WatchRunRequest {
            scenario_id: "release-train".into(),
            tenant_id: 1,
            namespace_id: 1,
            run_id: "run-1".into(),
            after_seq,
        };
        let _second = c.watch_run(watch(0)).await.expect("second stream");
        let third = c.watch_run(watch(0)).await.expect_err("over the cap");
        assert_eq!(third.code(), tonic::Code::ResourceExhausted, "{third:?}");
        assert!(third.message().contains("max_per_principal"), "{third:?}");
        assert_eq!(
            first.message().await.expect("stream").map(|d| d.seq),
            Some(1)
        );
        let started = std::time::Instant::now();
        let idle = first.message().await.expect_err("idle");
        assert_eq!(idle.code(), tonic::Code::DeadlineExceeded, "{idle:?}");
        assert!(idle.message().contains("idle_timeout_ms"), "{idle:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        drop(first);
        // The ended stream's slot is free again (it is released as its task ends).
        let mut reopened = None;
        for _ in 0..50 {
            match c.watch_run(watch(1)).await {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(reopened.is_some(), "the slot came back");
    });
}

/// A `WatchRun` stream ends at its lifetime limit even while the run is busy or idle within
/// the idle limit.
#[test]
fn watch_run_streams_end_at_their_lifetime() {
    let server = Server::start_with(
        Some("[server.limits.watch]\nmax_lifetime_ms = 800\nidle_timeout_ms = 60000\n"),
        |_| {},
    );
    runtime().block_on(async {
        let mut c = client(&server).await;
        let mut stream = start_and_watch(&mut c, 0).await;
        assert_eq!(
            stream.message().await.expect("stream").map(|d| d.seq),
            Some(1)
        );
        let started = std::time::Instant::now();
        let ended = stream.message().await.expect_err("the lifetime ends it");
        assert_eq!(ended.code(), tonic::Code::DeadlineExceeded, "{ended:?}");
        assert!(ended.message().contains("max_lifetime_ms"), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    });
}

#[test]
fn watch_run_streams_decisions_as_they_are_appended_and_ends_with_the_run() {
    let server = Server::start();
    runtime().block_on(async {
        let mut c = client(&server).await;
        let mut stream = start_and_watch(&mut c, 0).await;
        let first = stream
            .message()
            .await
            .expect("stream")
            .expect("start decision");
        assert_eq!(first.seq, 1);
        // A decision made after the watch began arrives on it.
        let mut driver = c.clone();
        let advanced = driver
            .next(next("next-1", 1500))
            .await
            .expect("next")
            .into_inner();
        let second = stream
            .message()
            .await
            .expect("stream")
            .expect("next decision");
        assert_eq!(Some(&second), advanced.decision.as_ref());
        // Drive the run to completion; the stream delivers the rest and ends.
        driver.trigger(tick("tick", 2500)).await.expect("tick");
        driver.next(next("next-3", 2600)).await.expect("next");
        let mut rest = Vec::new();
        while let Some(d) = stream.message().await.expect("stream") {
            rest.push(d.seq);
        }
        assert_eq!(rest, [3, 4]);
        let unknown = c
            .watch_run(pb::WatchRunRequest {
                scenario_id: "release-train".into(),
                tenant_id: 1,
                namespace_id: 1,
                run_id: "no-such-run".into(),
                after_seq: 0,
            })
            .await
            .expect_err("unknown run");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        let empty = c
            .watch_run(pb::WatchRunRequest {
                scenario_id: "release-train".into(),
                tenant_id: 1,
                namespace_id: 1,
                run_id: String::new(),
                after_seq: 0,
            })
            .await
            .expect_err("an empty run id");
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        assert!(empty.message().contains("run_id"), "{empty:?}");
    });
    // Opening a watch is audited like a status read; a refused one like refused arguments.
    let audit = server.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "call"
            && e["action"] == "scenario_status"
            && e["outcome"]["result"] == "success"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|e| e["event"] == "access"
            && e["transport"] == "grpc"
            && e["tool"] == "scenario_status"
            && e["detail"].as_str().is_some_and(|d| d.contains("run_id"))),
        "{audit:?}"
    );
}

#[test]
fn grpc_uses_the_servers_authentication_and_health_answers_without_it() {
    // The same token configuration as the MCP bearer tests: "ci" may call every tool.
    let token = crate::auth::CI_TOKEN;
    let server = Server::start_with(Some(&crate::auth::bearer_config()), |_| {});
    runtime().block_on(async {
        let channel = channel(&server).await;
        let mut anonymous = DecisionGateClient::new(channel.clone());
        let refused = anonymous
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect_err("no token");
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            refused.metadata().get("dg-error-kind").expect("kind"),
            "unauthenticated"
        );
        let mut wrong =
            DecisionGateClient::with_interceptor(channel.clone(), |mut r: tonic::Request<()>| {
                r.metadata_mut()
                    .insert("authorization", "Bearer wrong".parse().expect("header"));
                Ok(r)
            });
        assert_eq!(
            wrong
                .list_providers(pb::ListProvidersRequest {})
                .await
                .expect_err("wrong token")
                .code(),
            tonic::Code::Unauthenticated
        );
        let mut authorized = DecisionGateClient::with_interceptor(
            channel.clone(),
            move |mut r: tonic::Request<()>| {
                r.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {token}").parse().expect("header"),
                );
                Ok(r)
            },
        );
        let providers = authorized
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect("authorized")
            .into_inner();
        assert!(providers.providers.iter().any(|p| p.provider_id == "time"));

        // grpc.health.v1 answers probes, which carry no credentials.
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "decision_gate.v1.DecisionGate".into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(
            answer.status,
            i32::from(tonic_health::pb::health_check_response::ServingStatus::Serving)
        );
    });
    let audit = server.audit();
    let refusals: Vec<&Value> = audit
        .iter()
        .filter(|e| e["event"] == "access" && e["transport"] == "grpc")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit:?}");
    assert!(refusals.iter().all(|e| e["refusal"] == "unauthenticated"));
    assert!(
        refusals.iter().any(|e| e["presented_hash"].is_object()),
        "the wrong token is audited by its digest: {refusals:?}"
    );
    assert!(
        audit.iter().any(|e| e["event"] == "call"
            && e["action"] == "providers_list"
            && e["principal"] == "ci"),
        "{audit:?}"
    );
}

#[test]
fn an_oversized_message_is_refused_audited_and_writes_nothing() {
    let server = Server::start_with(Some("[server.limits]\nmax_body_bytes = 4096\n"), |_| {});
    runtime().block_on(async {
        let mut c = client(&server).await;
        let mut spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
        spec["padding"] = json!("x".repeat(8 * 1024));
        let refused = c
            .define_scenario(pb::DefineScenarioRequest {
                spec_json: spec.to_string(),
            })
            .await
            .expect_err("too large");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("4096"), "{refused:?}");
        assert_eq!(
            refused.metadata().get("dg-error-kind").expect("kind"),
            "too_large"
        );
        let listed = c
            .list_scenarios(pb::ListRequest {
                tenant_id: 1,
                namespace_id: 1,
                ..Default::default()
            })
            .await
            .expect("the server keeps serving")
            .into_inner();
        assert!(listed.items.is_empty(), "nothing was written");
    });
    let audit = server.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "access"
            && e["transport"] == "grpc"
            && e["refusal"] == "too_large"
            && e["tool"] == "DefineScenario"),
        "{audit:?}"
    );
}

/// `ListProviders` over TLS as `identity`, with an optional subject header a client might
/// forge; the error as text.
async fn list_over_tls(
    server: &Server,
    ca: &decision_gate_system_tests::pki::Ca,
    identity: Option<decision_gate_system_tests::pki::Leaf>,
    subject_header: Option<&'static str>,
) -> Result<(), String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(leaf.cert, leaf.key));
    }
    let channel = Channel::from_shared(format!("https://localhost:{}", server.grpc_addr.port()))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let mut client =
        DecisionGateClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            if let Some(subject) = subject_header {
                r.metadata_mut().insert(
                    "x-decision-gate-client-subject",
                    subject.parse().expect("metadata"),
                );
            }
            Ok(r)
        });
    client
        .list_providers(pb::ListProvidersRequest {})
        .await
        .map(drop)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

#[test]
fn an_mtls_grpc_listener_takes_the_subject_from_the_verified_certificate_only() {
    let ca = decision_gate_system_tests::pki::Ca::new("decision-gate test CA");
    let server = Server::start_with(Some(&crate::auth::mtls_config()), |dir| {
        decision_gate_system_tests::pki::write_server_files(dir, &ca)
    });
    let rogue_ca = decision_gate_system_tests::pki::Ca::new("rogue CA");
    runtime().block_on(async {
        list_over_tls(&server, &ca, Some(ca.client("agent-1")), None)
            .await
            .expect("a verified, configured client is served");
        let rogue = list_over_tls(
            &server,
            &ca,
            Some(rogue_ca.client("agent-1")),
            Some("agent-1"),
        )
        .await;
        assert!(rogue.is_err(), "an unverified certificate was accepted");
        let anonymous = list_over_tls(&server, &ca, None, Some("agent-1")).await;
        assert!(anonymous.is_err(), "no certificate was accepted");
        let stranger = list_over_tls(&server, &ca, Some(ca.client("agent-2")), None).await;
        assert!(
            stranger
                .as_ref()
                .is_err_and(|e| e.starts_with("Unauthenticated")),
            "{stranger:?}"
        );
    });
    let audit = server.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "access"
            && e["transport"] == "grpc"
            && e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("TLS handshake refused"))),
        "{audit:?}"
    );
    assert!(
        audit
            .iter()
            .any(|e| e["event"] == "call" && e["principal"] == "agent-1"),
        "{audit:?}"
    );
}

/// Every service on the gRPC listener, as reflection should list it in either version.
const SERVED: [&str; 4] = [
    "decision_gate.v1.DecisionGate",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

#[test]
fn reflection_describes_the_service_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = Server::start();
    let (listed_v1, listed_v1alpha) = runtime().block_on(async {
        let channel = channel(&server).await;
        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let answer = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection v1")
            .into_inner()
            .message()
            .await
            .expect("stream")
            .expect("an answer");
        let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("not a service list: {answer:?}");
        };
        let listed_v1: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        let request = v1alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
            ),
        };
        let answer = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .expect("reflection v1alpha")
            .into_inner()
            .message()
            .await
            .expect("stream")
            .expect("an answer");
        let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            answer.message_response
        else {
            panic!("not a service list: {answer:?}");
        };
        let listed_v1alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        (listed_v1, listed_v1alpha)
    });
    for listed in [&listed_v1, &listed_v1alpha] {
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(sorted, SERVED, "{listed:?}");
    }
}

/// The rpc names of `decision_gate.v1.DecisionGate`, read from its `.proto`.
fn proto_rpcs() -> Vec<String> {
    let proto = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/decision_gate/v1/decision_gate.proto"
    ))
    .expect("the proto");
    proto
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("rpc "))
        .map(|rest| rest.split('(').next().expect("rpc name").trim().to_owned())
        .collect()
}

#[test]
fn python_grpcio_reflection_lists_and_resolves_the_service_through_v1alpha() {
    let server = Server::start();
    let results = python_grpc(
        &server,
        json!([{ "reflect": "decision_gate.v1.DecisionGate" }]),
    );
    let answer = &results[0];
    assert!(answer.get("error").is_none(), "{answer}");
    let mut listed: Vec<&str> = answer["services"]
        .as_array()
        .expect("services")
        .iter()
        .map(|s| s.as_str().expect("a service name"))
        .collect();
    listed.sort_unstable();
    assert_eq!(listed, SERVED, "{answer}");
    // The service resolved from the descriptors reflection sent: its file and every rpc.
    assert_eq!(answer["file"], "decision_gate/v1/decision_gate.proto");
    let rpcs = proto_rpcs();
    assert!(rpcs.len() >= 18, "{rpcs:?}");
    assert_eq!(answer["methods"], json!(rpcs));
}

#[test]
fn grpc_shares_the_rate_limit_and_the_metrics() {
    let server = Server::start_with(
        Some("[server.limits.rate_limit]\nrequests_per_second = 1\nburst = 2\n"),
        |_| {},
    );
    let http = reqwest::blocking::Client::new();
    let metrics = || {
        http.get(server.url("/metrics"))
            .send()
            .expect("metrics")
            .text()
            .expect("text")
    };
    assert!(!metrics().contains("tool=\"providers_list\""));
    // One budget per principal across transports: this MCP call spends half of the burst.
    let (status, _, body) = crate::support::post(
        &http,
        &server.mcp_url(),
        crate::support::call_body(1, "providers_list", json!({})),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    runtime().block_on(async {
        let mut c = client(&server).await;
        c.list_providers(pb::ListProvidersRequest {})
            .await
            .expect("within the burst");
        let limited = c
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect_err("over the rate");
        assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            limited.metadata().get("dg-error-kind").expect("kind"),
            "rate_limited"
        );
        assert!(
            limited.metadata().get("retry-after-ms").is_some(),
            "{limited:?}"
        );
    });
    let metrics = metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("decision_gate_tool_calls_total")
                && l.contains("tool=\"providers_list\"")
                && l.contains("outcome=\"ok\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("decision_gate_requests_refused_total")
                && l.contains("transport=\"grpc\"")
                && l.contains("rate_limited")),
        "{metrics}"
    );
    assert!(
        server
            .audit()
            .iter()
            .any(|e| e["transport"] == "grpc" && e["refusal"] == "rate_limited"),
        "the breach is audited"
    );
}

#[test]
fn a_graceful_shutdown_ends_open_watches() {
    let mut server = Server::start();
    let rt = runtime();
    let mut stream = rt.block_on(async {
        let mut c = client(&server).await;
        let mut stream = start_and_watch(&mut c, 1).await;
        // Nothing to send yet: the run is idle and the stream stays open.
        let idle = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(idle.is_err(), "the stream answered early: {idle:?}");
        stream
    });
    let exit = server.terminate(Duration::from_secs(10));
    assert!(
        exit.is_some_and(|s| s.success()),
        "an idle watch held the server open: {exit:?}"
    );
    let end = rt.block_on(stream.message());
    assert!(
        matches!(&end, Err(s) if s.code() == tonic::Code::Unavailable) || matches!(end, Ok(None)),
        "{end:?}"
    );
}

#[test]
fn a_correlation_id_is_validated_and_travels_into_the_audit_trail() {
    let server = Server::start();
    runtime().block_on(async {
        let channel = channel(&server).await;
        let with_id = |id: &'static str| {
            DecisionGateClient::with_interceptor(
                channel.clone(),
                move |mut r: tonic::Request<()>| {
                    r.metadata_mut()
                        .insert("x-correlation-id", id.parse().expect("metadata"));
                    Ok(r)
                },
            )
        };
        with_id("deploy-42")
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect("a valid id");
        let refused = with_id("a/b")
            .list_providers(pb::ListProvidersRequest {})
            .await
            .expect_err("an invalid id");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            refused.metadata().get("dg-error-kind").expect("kind"),
            "invalid_correlation_id"
        );
        assert!(
            refused.message().starts_with("x-correlation-id"),
            "{refused:?}"
        );
    });
    let audit = server.audit();
    assert!(
        audit.iter().any(|e| e["event"] == "call"
            && e["action"] == "providers_list"
            && e["correlation_id"] == "deploy-42"),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|e| e["event"] == "access"
            && e["transport"] == "grpc"
            && e["refusal"] == "invalid_correlation_id"
            && e["presented_hash"].is_object()),
        "{audit:?}"
    );
}

/// `Next` carries the same feedback as `scenario_next`: the level given (capped by the
/// server), the reason when capped, and the gate evaluations from `trace` up, evidence emptied
/// below `evidence`.
#[test]
fn next_feedback_over_grpc_matches_mcp() {
    let server = Server::start_with(Some("[server.feedback]\nmax = \"trace\"\n"), |_| {});
    let http = reqwest::blocking::Client::new();
    let mcp = |id: u64, tool: &str, arguments: Value| -> Value {
        let (status, _, body) = crate::support::post(
            &http,
            &server.mcp_url(),
            crate::support::call_body(id, tool, arguments),
            &[],
        );
        assert_eq!(status, 200, "{body}");
        let reply: Value = serde_json::from_str(&body).expect("JSON-RPC reply");
        ok(&reply["result"]).clone()
    };
    let spec: Value = serde_json::from_str(THREE_STAGE).expect("fixture");
    mcp(1, "scenario_define", json!({ "spec": spec }));
    for run in ["run-1", "run-2"] {
        mcp(
            2,
            "scenario_start",
            json!({ "scenario_id": "release-train", "started_at": { "kind": "unix_millis", "value": 0 },
                    "run_config": { "tenant_id": 1, "namespace_id": 1, "run_id": run } }),
        );
    }
    let over_mcp = mcp(
        3,
        "scenario_next",
        json!({ "scenario_id": "release-train", "feedback": "evidence",
                "request": { "run_id": "run-2", "tenant_id": 1, "namespace_id": 1,
                             "trigger_id": "n-1", "agent_id": "agent-7",
                             "time": { "kind": "unix_millis", "value": 500 } } }),
    );
    let (asked, default) = runtime().block_on(async {
        let mut c = client(&server).await;
        let asked = c
            .next(pb::NextRequest {
                feedback: pb::FeedbackLevel::Evidence.into(),
                ..next("n-1", 500)
            })
            .await
            .expect("next")
            .into_inner();
        let default = c.next(next("n-2", 600)).await.expect("next").into_inner();
        (asked, default)
    });

    let feedback = asked.feedback.expect("feedback");
    assert_eq!(feedback.level, i32::from(pb::FeedbackLevel::Trace));
    assert_eq!(
        feedback.denied_reason.as_deref(),
        over_mcp["feedback"]["denied_reason"].as_str()
    );
    assert!(feedback.denied_reason.is_some());
    let gates: Value =
        serde_json::from_str(&feedback.gate_evaluations_json.expect("gate evaluations"))
            .expect("gate evaluations are JSON");
    assert_eq!(
        gates[0]["evaluation"]["gate_id"], "planning-closed",
        "{gates}"
    );
    assert!(
        gates
            .as_array()
            .expect("array")
            .iter()
            .all(|g| g["evidence"] == json!([])),
        "evidence is withheld below `evidence`: {gates}"
    );
    assert_eq!(gates, over_mcp["feedback"]["gate_evaluations"]);

    let feedback = default.feedback.expect("feedback");
    assert_eq!(feedback.level, i32::from(pb::FeedbackLevel::Summary));
    assert_eq!(feedback.gate_evaluations_json, None);
    assert_eq!(feedback.denied_reason, None);
}
