//! Tool arguments: see `decision_gate_fuzz_harness::tool_arguments`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| decision_gate_fuzz_harness::tool_arguments(data));
