//! See `decision_gate_fuzz_harness::scenario_spec`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| decision_gate_fuzz_harness::scenario_spec(data));
