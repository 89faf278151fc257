//! Decision Gate benchmarks. Each target is measured against a baseline in the same run and
//! printed as `BENCH <area>.<name> <measured> <unit> target <op> <value> <pass|FAIL>`.
//!
//! Area `mcp`: see [`mcp`]. Area `grpc`: see [`grpc`]. Area `postgres`: see [`postgres`].
//!
//! Area `core`:
//! - `ret_vs_cedar`, `ret_vs_regorus`: one 100-condition gate, every condition true (so nothing
//!   short-circuits), over in-memory evidence: Decision Gate's comparators and requirement tree
//!   with its full trace, against the same logic as a Cedar policy and a Rego policy evaluated in
//!   this process. Target: at least 10× faster than each.
//! - `trigger_flat_memory`, `trigger_flat_sqlite`: the cost of a trigger on a run with 10,000
//!   earlier triggers divided by its cost on a run with 10. Target: at most 1.2.

// The same allocator as the `decision-gate` binary, so the echo server (served from this binary)
// and the load clients run on what the server runs on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod grpc;
mod mcp;
mod postgres;

use std::hint::black_box;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decision_gate_core::engine::{OutcomeBuffers, Plan};
use decision_gate_core::evidence::EvidenceValue;
use decision_gate_core::ret::LogicMode;
use decision_gate_core::{
    CheckId, DecisionGate, HashAlgorithm, InMemoryEvidence, MemoryStore, NamespaceId, NextRequest,
    RequestContext, SqliteStore, StartRequest, TenantId, Timestamp,
};
use serde_json::{Value, json};

const CONDITIONS: usize = 100;

/// The median time of one call of `f`, in nanoseconds, over batches of about 10 ms.
fn per_call_ns(mut f: impl FnMut()) -> f64 {
    for _ in 0..200 {
        f();
    }
    let mut batch: u32 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        if start.elapsed() > Duration::from_millis(10) || batch > 1 << 24 {
            break;
        }
        batch *= 2;
    }
    let mut samples: Vec<f64> = (0..21)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn report(name: &str, measured: f64, unit: &str, op: &str, target: f64) {
    report_in("core", name, measured, unit, op, target);
}

fn report_in(area: &str, name: &str, measured: f64, unit: &str, op: &str, target: f64) {
    let pass = if op == ">=" {
        measured >= target
    } else {
        measured <= target
    };
    println!(
        "BENCH {area}.{name} {measured:.2} {unit} target {op} {target} {}",
        if pass { "pass" } else { "FAIL" }
    );
}

fn gate_spec() -> Value {
    let leaves: Vec<Value> = (0..CONDITIONS)
        .map(|i| json!({"Condition": format!("c{i}")}))
        .collect();
    let conditions: Vec<Value> = (0..CONDITIONS)
        .map(|i| json!({"condition_id": format!("c{i}"), "query": {"provider_id": "mem", "check_id": "v"}, "comparator": "equals", "expected": true}))
        .collect();
    json!({
        "scenario_id": "bench", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "only", "gates": [{"gate_id": "g", "requirement": {"And": leaves}}], "advance_to": {"kind": "terminal"}}],
        "conditions": conditions
    })
}

/// Decision Gate: 100 comparators and the requirement tree, with its trace.
fn ret_ns() -> f64 {
    let plan = Plan::compile(
        serde_json::from_value(gate_spec()).expect("spec"),
        HashAlgorithm::Sha256,
    )
    .expect("plan");
    let evidence: Vec<EvidenceValue> = (0..CONDITIONS)
        .map(|_| EvidenceValue::Json(json!(true)))
        .collect();
    let values: Vec<Option<&EvidenceValue>> = evidence.iter().map(Some).collect();
    let mut buffers = OutcomeBuffers::default();
    plan.gate_outcomes(0, &values, LogicMode::Kleene, &mut buffers);
    assert_eq!(buffers.outcomes, [decision_gate_core::TriState::True]);
    assert_eq!(buffers.trace.len(), CONDITIONS, "every leaf is traced");
    per_call_ns(|| {
        plan.gate_outcomes(0, black_box(&values), LogicMode::Kleene, &mut buffers);
        black_box(&buffers.outcomes);
    })
}

fn context_json() -> Value {
    Value::Object(
        (0..CONDITIONS)
            .map(|i| (format!("c{i}"), json!(true)))
            .collect(),
    )
}

/// Cedar: the same conjunction as a `when` clause over the request context.
fn cedar_ns() -> f64 {
    use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request};
    let clause = (0..CONDITIONS)
        .map(|i| format!("context.c{i} == true"))
        .collect::<Vec<_>>()
        .join(" && ");
    let policies = PolicySet::from_str(&format!(
        "permit(principal, action, resource) when {{ {clause} }};"
    ))
    .expect("policy");
    let uid = |s: &str| EntityUid::from_str(s).expect("uid");
    let context = Context::from_json_value(context_json(), None).expect("context");
    let request = Request::new(
        uid(r#"Agent::"a""#),
        uid(r#"Action::"advance""#),
        uid(r#"Gate::"g""#),
        context,
        None,
    )
    .expect("request");
    let authorizer = Authorizer::new();
    let entities = Entities::empty();
    assert_eq!(
        authorizer
            .is_authorized(&request, &policies, &entities)
            .decision(),
        Decision::Allow
    );
    per_call_ns(|| {
        black_box(authorizer.is_authorized(black_box(&request), &policies, &entities));
    })
}

/// regorus: the same conjunction as a Rego rule over the input.
fn regorus_ns() -> f64 {
    let body = (0..CONDITIONS)
        .map(|i| format!("    input.c{i} == true"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(
            "gate.rego".into(),
            format!("package gate\n\nallow if {{\n{body}\n}}\n"),
        )
        .expect("policy");
    engine.set_input(regorus::Value::from_json_str(&context_json().to_string()).expect("input"));
    assert_eq!(
        engine.eval_rule("data.gate.allow".into()).expect("eval"),
        regorus::Value::from(true)
    );
    per_call_ns(|| {
        black_box(
            engine
                .eval_rule(black_box("data.gate.allow".into()))
                .expect("eval"),
        );
    })
}

/// The per-trigger cost at the 10,000th trigger divided by the cost at the 10th.
async fn trigger_flat(gate: DecisionGate) -> f64 {
    let ctx = RequestContext::local(
        TenantId::new(1).expect("tenant"),
        NamespaceId::new(1).expect("namespace"),
    );
    let spec = json!({
        "scenario_id": "flat", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "only", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}], "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "mem", "check_id": "v"}, "comparator": "equals", "expected": true}]
    });
    gate.define_scenario_json(&ctx, &spec.to_string())
        .await
        .expect("define");
    let mut sent = [0u64; 2];
    let runs = ["short", "long"];
    for run in runs {
        let start = StartRequest {
            scenario_id: "flat".parse().expect("id"),
            run_id: run.parse().expect("id"),
            dispatch_targets: vec![],
            started_at: Timestamp::Logical(0),
        };
        gate.start_run(&ctx, start).await.expect("start");
    }
    let trigger = |run: usize, n: u64| NextRequest {
        scenario_id: "flat".parse().expect("id"),
        run_id: runs[run].parse().expect("id"),
        trigger_id: format!("t{n}").parse().expect("id"),
        agent_id: "bench".into(),
        time: Timestamp::Logical(n),
    };
    for (run, earlier) in [(0, 10), (1, 10_000)] {
        for _ in 0..earlier {
            sent[run] += 1;
            gate.next(&ctx, trigger(run, sent[run]))
                .await
                .expect("setup trigger");
        }
    }
    // Interleave batches on both runs so drift hits both alike; compare medians.
    let mut per_run: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..15 {
        for run in [0, 1] {
            let started = Instant::now();
            for _ in 0..10 {
                sent[run] += 1;
                gate.next(&ctx, trigger(run, sent[run]))
                    .await
                    .expect("trigger");
            }
            per_run[run].push(started.elapsed().as_nanos() as f64 / 10.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let [short, long] = &mut per_run;
    median(long) / median(short)
}

fn evidence_provider() -> Arc<InMemoryEvidence> {
    Arc::new(InMemoryEvidence::new(
        "mem".parse().expect("id"),
        [CheckId::from_str("v").expect("id")],
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let area = args.first().cloned().unwrap_or_default();
    match area.as_str() {
        "core" => {}
        "mcp" => {
            // The orchestrator blocks on child processes; keep it off the async workers.
            let lines = tokio::task::spawn_blocking(mcp::run)
                .await
                .expect("mcp bench");
            for (name, measured, unit, op, target) in lines {
                report_in("mcp", name, measured, unit, op, target);
            }
            return;
        }
        "grpc" => {
            let lines = tokio::task::spawn_blocking(grpc::run)
                .await
                .expect("grpc bench");
            for (name, measured, unit, op, target) in lines {
                report_in("grpc", name, measured, unit, op, target);
            }
            return;
        }
        "postgres" => {
            let lines = tokio::task::spawn_blocking(postgres::run)
                .await
                .expect("postgres bench");
            for (name, measured, unit, op, target) in lines {
                report_in("postgres", name, measured, unit, op, target);
            }
            return;
        }
        "grpc-load" => return grpc::load_client(&args[1..]).await,
        "grpc-health-load" => return grpc::health_load_client(&args[1..]).await,
        "mcp-load" => return mcp::load_client(&args[1..]).await,
        "mcp-echo" => return mcp::echo_server().await,
        _ => {
            eprintln!("unknown area {area:?}; known areas: core, mcp, grpc, postgres");
            std::process::exit(2);
        }
    }
    let ret = ret_ns();
    let cedar = cedar_ns();
    let rego = regorus_ns();
    eprintln!(
        "per decision: RET {:.0} ns, Cedar {:.0} ns, regorus {:.0} ns",
        ret, cedar, rego
    );
    report("ret_vs_cedar", cedar / ret, "x", ">=", 10.0);
    report("ret_vs_regorus", rego / ret, "x", ">=", 10.0);

    let memory = DecisionGate::builder()
        .provider(evidence_provider())
        .expect("provider")
        .store(Arc::new(MemoryStore::default()))
        .build();
    report(
        "trigger_flat_memory",
        trigger_flat(memory).await,
        "x",
        "<=",
        1.2,
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"))
            .await
            .expect("sqlite"),
    );
    let on_disk = DecisionGate::builder()
        .provider(evidence_provider())
        .expect("provider")
        .store(sqlite)
        .build();
    report(
        "trigger_flat_sqlite",
        trigger_flat(on_disk).await,
        "x",
        "<=",
        1.2,
    );
}
