//! Decision Gate benchmarks. Each target is measured against a baseline in the same run and
//! printed as `BENCH <area>.<name> <measured> <unit> target <op> <value> <pass|FAIL>`.
//!
//! Area `mcp`: see [`mcp`]. Area `grpc`: see [`grpc`]. Area `postgres`: see [`postgres`].
//! Area `sqlite`: see [`sqlite`]. Area `authz`: see [`authz`].
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

mod authz;
mod grpc;
mod limits;
mod mcp;
mod postgres;
mod sqlite;
mod usage;

use anyhow::Context as _;
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
pub(crate) fn per_call_ns(mut f: impl FnMut()) -> f64 {
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
    let samples: Vec<f64> = (0..21)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    median(samples)
}

/// The middle value (the upper one of an even count); NaN for none.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One target's figure: (name, measured, unit, op, target).
pub(crate) type Line = (&'static str, f64, &'static str, &'static str, f64);

fn report(area: &str, name: &str, measured: f64, unit: &str, op: &str, target: f64) {
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
fn ret_ns() -> anyhow::Result<f64> {
    let plan = Plan::compile(
        serde_json::from_value(gate_spec()).context("spec")?,
        HashAlgorithm::Sha256,
    )
    .context("plan")?;
    let evidence: Vec<EvidenceValue> = (0..CONDITIONS)
        .map(|_| EvidenceValue::Json(json!(true)))
        .collect();
    let values: Vec<Option<&EvidenceValue>> = evidence.iter().map(Some).collect();
    let mut buffers = OutcomeBuffers::default();
    plan.gate_outcomes(0, &values, LogicMode::Kleene, &mut buffers);
    anyhow::ensure!(
        buffers.outcomes == [decision_gate_core::TriState::True],
        "the gate holds: {:?}",
        buffers.outcomes
    );
    anyhow::ensure!(buffers.trace.len() == CONDITIONS, "every leaf is traced");
    Ok(per_call_ns(|| {
        plan.gate_outcomes(0, black_box(&values), LogicMode::Kleene, &mut buffers);
        black_box(&buffers.outcomes);
    }))
}

fn context_json() -> Value {
    Value::Object(
        (0..CONDITIONS)
            .map(|i| (format!("c{i}"), json!(true)))
            .collect(),
    )
}

/// Cedar: the same conjunction as a `when` clause over the request context.
fn cedar_ns() -> anyhow::Result<f64> {
    use cedar_policy::{Authorizer, Context, Decision, Entities, EntityUid, PolicySet, Request};
    let clause = (0..CONDITIONS)
        .map(|i| format!("context.c{i} == true"))
        .collect::<Vec<_>>()
        .join(" && ");
    let policies = PolicySet::from_str(&format!(
        "permit(principal, action, resource) when {{ {clause} }};"
    ))
    .context("policy")?;
    let uid = |s: &str| EntityUid::from_str(s).context("uid");
    let context = Context::from_json_value(context_json(), None).context("context")?;
    let request = Request::new(
        uid(r#"Agent::"a""#)?,
        uid(r#"Action::"advance""#)?,
        uid(r#"Gate::"g""#)?,
        context,
        None,
    )
    .context("request")?;
    let authorizer = Authorizer::new();
    let entities = Entities::empty();
    anyhow::ensure!(
        authorizer
            .is_authorized(&request, &policies, &entities)
            .decision()
            == Decision::Allow,
        "the Cedar policy allows"
    );
    Ok(per_call_ns(|| {
        black_box(authorizer.is_authorized(black_box(&request), &policies, &entities));
    }))
}

/// regorus: the same conjunction as a Rego rule over the input.
fn regorus_ns() -> anyhow::Result<f64> {
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
        .context("policy")?;
    engine.set_input(regorus::Value::from_json_str(&context_json().to_string()).context("input")?);
    anyhow::ensure!(
        engine.eval_rule("data.gate.allow".into()).context("eval")? == regorus::Value::from(true),
        "the Rego rule allows"
    );
    // Checked above: in the loop an evaluation error would only be measured, not hidden.
    Ok(per_call_ns(|| {
        let _ = black_box(engine.eval_rule(black_box("data.gate.allow".into())));
    }))
}

/// The per-trigger cost at the 10,000th trigger divided by the cost at the 10th.
async fn trigger_flat(gate: DecisionGate) -> anyhow::Result<f64> {
    let ctx = RequestContext::local(
        TenantId::new(1).context("tenant")?,
        NamespaceId::new(1).context("namespace")?,
    );
    let spec = json!({
        "scenario_id": "flat", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "only", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}], "advance_to": {"kind": "terminal"}}],
        "conditions": [{"condition_id": "c", "query": {"provider_id": "mem", "check_id": "v"}, "comparator": "equals", "expected": true}]
    });
    gate.define_scenario_json(&ctx, &spec.to_string())
        .await
        .context("define")?;
    let mut sent = [0u64; 2];
    let runs = ["short", "long"];
    for run in runs {
        let start = StartRequest {
            scenario_id: "flat".parse().context("id")?,
            run_id: run.parse().context("id")?,
            dispatch_targets: vec![],
            started_at: Timestamp::Logical(0),
        };
        gate.start_run(&ctx, start).await.context("start")?;
    }
    let trigger = |run: usize, n: u64| -> anyhow::Result<NextRequest> {
        Ok(NextRequest {
            scenario_id: "flat".parse().context("id")?,
            run_id: runs[run].parse().context("id")?,
            trigger_id: format!("t{n}").parse().context("id")?,
            agent_id: "bench".into(),
            time: Timestamp::Logical(n),
        })
    };
    for (run, earlier) in [(0, 10), (1, 10_000)] {
        for _ in 0..earlier {
            sent[run] += 1;
            gate.next(&ctx, trigger(run, sent[run])?)
                .await
                .context("setup trigger")?;
        }
    }
    // Interleave batches on both runs so drift hits both alike; compare medians.
    let mut per_run: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..15 {
        for run in [0, 1] {
            let started = Instant::now();
            for _ in 0..10 {
                sent[run] += 1;
                gate.next(&ctx, trigger(run, sent[run])?)
                    .await
                    .context("trigger")?;
            }
            per_run[run].push(started.elapsed().as_nanos() as f64 / 10.0);
        }
    }
    let [short, long] = per_run;
    Ok(median(long) / median(short))
}

fn evidence_provider() -> anyhow::Result<Arc<InMemoryEvidence>> {
    Ok(Arc::new(InMemoryEvidence::new(
        "mem".parse().context("id")?,
        [CheckId::from_str("v").context("id")?],
    )))
}

/// The `core` area's targets.
async fn core() -> anyhow::Result<Vec<Line>> {
    let ret = ret_ns()?;
    let cedar = cedar_ns()?;
    let rego = regorus_ns()?;
    eprintln!("per decision: RET {ret:.0} ns, Cedar {cedar:.0} ns, regorus {rego:.0} ns");
    let memory = DecisionGate::builder()
        .provider(evidence_provider()?)
        .context("provider")?
        .store(Arc::new(MemoryStore::default()))
        .build();
    let flat_memory = trigger_flat(memory).await?;
    let dir = tempfile::tempdir().context("temp dir")?;
    let sqlite = Arc::new(
        SqliteStore::open(dir.path().join("bench.db"))
            .await
            .context("sqlite")?,
    );
    let on_disk = DecisionGate::builder()
        .provider(evidence_provider()?)
        .context("provider")?
        .store(sqlite)
        .build();
    Ok(vec![
        ("ret_vs_cedar", cedar / ret, "x", ">=", 10.0),
        ("ret_vs_regorus", rego / ret, "x", ">=", 10.0),
        ("trigger_flat_memory", flat_memory, "x", "<=", 1.2),
        (
            "trigger_flat_sqlite",
            trigger_flat(on_disk).await?,
            "x",
            "<=",
            1.2,
        ),
    ])
}

/// Runs an area's orchestrator, which blocks on child processes, off the async workers.
async fn blocking(run: fn() -> anyhow::Result<Vec<Line>>) -> anyhow::Result<Vec<Line>> {
    tokio::task::spawn_blocking(run)
        .await
        .context("bench thread")?
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let area = args.first().map(String::as_str).unwrap_or_default();
    let rest = args.get(1..).unwrap_or_default();
    let lines = match area {
        "core" => core().await?,
        "authz" => blocking(authz::run).await?,
        "mcp" => blocking(mcp::run).await?,
        "grpc" => blocking(grpc::run).await?,
        "limits" => blocking(limits::run).await?,
        "postgres" => blocking(postgres::run).await?,
        "sqlite" => blocking(sqlite::run).await?,
        "usage" => blocking(usage::run).await?,
        "grpc-load" => return grpc::load_client(rest).await,
        "grpc-health-load" => return grpc::health_load_client(rest).await,
        "mcp-load" => return mcp::load_client(rest).await,
        "mcp-echo" => return mcp::echo_server().await,
        _ => anyhow::bail!(
            "unknown area {area:?}; known areas: core, authz, mcp, grpc, limits, postgres, sqlite, usage"
        ),
    };
    for (name, measured, unit, op, target) in lines {
        report(area, name, measured, unit, op, target);
    }
    Ok(())
}
