//! Area `limits`: what a hostile caller's input costs the engine.
//!
//! - `contains_10k_ms`: one `contains` evaluation of an observed array of 10,000 strings
//!   against an expected array of the same 10,000 in reverse order (every item found, the
//!   worst case for a scan); the median of 21 evaluations. Target: at most 5 ms. Beside it, the
//!   scan per expected item it replaced, measured once in the same run (the baseline).
//! - `next_overhead_pct`: what the limits at their defaults cost `scenario_next`, against the
//!   same release binary with every limit at its ceiling (`Limits::CEILING`, the loosest
//!   configuration a server accepts): `(1 - default / ceiling) x 100` of calls/s, eight
//!   clients over Streamable HTTP on the in-memory store (so the figure is the server's, not the
//!   disk's), the median over rounds that alternate which server is measured first. Target: at
//!   most 3 %.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use decision_gate_core::Limits;
use decision_gate_core::comparator::{Comparator, Comparison};
use decision_gate_core::evidence::EvidenceValue;
use decision_gate_core::ret::TriState;
use serde_json::{Value, json};

/// Items on each side.
const ITEMS: usize = 10_000;
/// Evaluations whose median is reported.
const RUNS: usize = 21;

/// Rounds behind `next_overhead_pct`: the two servers' figures differ by less than the
/// machine's drift between phases, so more rounds than elsewhere.
const OVERHEAD_ROUNDS: usize = 9;

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let contains_ms = contains()?;
    let overhead = next_overhead_pct()?;
    Ok(vec![
        ("contains_10k_ms", contains_ms, "ms", "<=", 5.0),
        ("next_overhead_pct", overhead, "%", "<=", 3.0),
    ])
}

/// `scenario_next` calls/s with the default limits against every limit at its ceiling.
fn next_overhead_pct() -> anyhow::Result<f64> {
    use crate::mcp::{self, CONCURRENCY, Store};
    let bin = PathBuf::from(
        std::env::var("DG_BIN")
            .context("DG_BIN: the release decision-gate binary (scripts/bench.sh sets it)")?,
    );
    let dir = tempfile::tempdir().context("temp dir")?;
    let ceilings: String = Limits::CEILING
        .table()
        .iter()
        .map(|(name, value)| format!("{name} = {value}\n"))
        .collect();
    let loosest = format!("[engine.limits]\n{ceilings}");
    let defaults = mcp::decision_gate(&bin, &dir.path().join("defaults"), Store::Memory, false)?;
    let ceiling = mcp::decision_gate_with(
        &bin,
        &dir.path().join("ceiling"),
        Store::Memory,
        false,
        &loosest,
    )?;
    let mut overheads = Vec::new();
    for round in 1..=OVERHEAD_ROUNDS {
        let phase = |server: &mcp::Process, what: &str| -> anyhow::Result<f64> {
            let url = format!("http://{}/mcp", server.addr);
            let measured = mcp::load(&url, "scenario_next", CONCURRENCY, None)?;
            mcp::phase_line(&format!("round {round}: {what}"), &measured);
            Ok(measured.calls_per_sec)
        };
        let (at_default, at_ceiling) = if round % 2 == 1 {
            let d = phase(&defaults, "limits at their defaults")?;
            (d, phase(&ceiling, "limits at their ceilings")?)
        } else {
            let c = phase(&ceiling, "limits at their ceilings")?;
            (phase(&defaults, "limits at their defaults")?, c)
        };
        overheads.push((1.0 - at_default / at_ceiling) * 100.0);
    }
    Ok(crate::median(overheads))
}

/// One `contains` evaluation of 10,000 x 10,000 items, in milliseconds.
fn contains() -> anyhow::Result<f64> {
    let observed: Vec<Value> = (0..ITEMS).map(|i| json!(format!("item-{i:05}"))).collect();
    let expected: Vec<Value> = observed.iter().rev().cloned().collect();
    let comparison = Comparison::new(Comparator::Contains, Some(&Value::Array(expected.clone())));
    let evidence = EvidenceValue::Json(Value::Array(observed.clone()));
    let mut millis = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        let answer = comparison.evaluate(black_box(Some(&evidence)));
        millis.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(answer == TriState::True, "every item is present");
    }
    let started = Instant::now();
    let scanned = expected
        .iter()
        .all(|item| black_box(&observed).contains(item));
    let scan_ms = started.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(scanned, "the baseline agrees");
    let contains_ms = crate::median(millis);
    eprintln!(
        "contains {ITEMS} x {ITEMS}: {contains_ms:.2} ms (median of {RUNS}); a scan per item: {scan_ms:.0} ms ({:.0}x)",
        scan_ms / contains_ms
    );
    Ok(contains_ms)
}
