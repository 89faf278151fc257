//! Area `limits`: what a hostile caller's input costs the engine.
//!
//! - `contains_10k_ms`: one `contains` evaluation of an observed array of 10,000 strings
//!   against an expected array of the same 10,000 in reverse order (every item found, the
//!   worst case for a scan); the median of 21 evaluations. Target: at most 5 ms. Beside it, the
//!   scan per expected item it replaced, measured once in the same run (the baseline).
//!
//! `limits.next_overhead_pct` (the cost of the count limits on `scenario_next`) comes with
//! those limits (issue 21, item 1).

use std::hint::black_box;
use std::time::Instant;

use decision_gate_core::comparator::{Comparator, Comparison};
use decision_gate_core::evidence::EvidenceValue;
use decision_gate_core::ret::TriState;
use serde_json::{Value, json};

/// Items on each side.
const ITEMS: usize = 10_000;
/// Evaluations whose median is reported.
const RUNS: usize = 21;

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
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
    Ok(vec![("contains_10k_ms", contains_ms, "ms", "<=", 5.0)])
}
