//! See `decision_gate_fuzz_harness::grpc_messages`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| decision_gate_fuzz_harness::grpc_messages(data));
