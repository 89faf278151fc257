//! Tool-argument parsing and everything behind it: the first byte picks a tool, the rest is its
//! arguments as JSON text. Every input must end in a result or a tool error, never a panic.

#![no_main]

use std::sync::{Arc, OnceLock};

use decision_gate_core::providers::{TimeConfig, TimeProvider};
use decision_gate_core::{Action, DecisionGate};
use decision_gate_mcp::caller::Caller;
use decision_gate_mcp::tools::{self, ToolPolicy};
use libfuzzer_sys::fuzz_target;

fn gate() -> &'static DecisionGate {
    static GATE: OnceLock<DecisionGate> = OnceLock::new();
    GATE.get_or_init(|| {
        DecisionGate::builder()
            .provider(Arc::new(TimeProvider::new(TimeConfig::default())))
            .expect("time provider")
            .build()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let action = Action::ALL[usize::from(first) % Action::ALL.len()];
    let Ok(args) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let _ = runtime.block_on(tools::call(
        gate(),
        &ToolPolicy::default(),
        &Caller::stdio(),
        action,
        args,
    ));
});
