//! What each fuzz target runs on one input. The cargo-fuzz targets in `fuzz/` call these
//! functions; `tests/corpus.rs` replays every file of `fuzz/corpus/<target>/` through the same
//! functions on the stable toolchain, so a crash the fuzzer once found stays fixed.
//!
//! Each function must return for every input: a panic is the failure the fuzzer looks for.
//! Where a property holds for every input (a validated spec compiles, canonical JSON is a fixed
//! point), the function asserts it.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use decision_gate_core::access::InMemoryAuditSink;
use decision_gate_core::engine::{self, Limits, Plan};
use decision_gate_core::hashing::canonical_json as canonical;
use decision_gate_core::providers::{TimeConfig, TimeProvider};
use decision_gate_core::runpack::{self, VerifyOptions};
use decision_gate_core::spec::ScenarioSpec;
use decision_gate_core::{Action, DecisionGate, HashAlgorithm};
use decision_gate_mcp::caller::Caller;
use decision_gate_mcp::grpc::GrpcApi;
use decision_gate_mcp::grpc::pb::{self, decision_gate_server::DecisionGate as _};
use decision_gate_mcp::handler::Shared;
use decision_gate_mcp::metrics::Metrics;
use decision_gate_mcp::tools::{self, ToolPolicy};
use prost::Message as _;

/// What a target runs on one input.
pub type Target = fn(&[u8]);

/// The targets, by the name of their corpus directory.
pub const TARGETS: [(&str, Target); 5] = [
    ("scenario_spec", scenario_spec),
    ("tool_arguments", tool_arguments),
    ("grpc_messages", grpc_messages),
    ("runpack_manifest", runpack_manifest),
    ("canonical_json", canonical_json),
];

/// A service with the `time` provider, shared by every input of a process.
fn gate() -> &'static Arc<DecisionGate> {
    static GATE: OnceLock<Arc<DecisionGate>> = OnceLock::new();
    GATE.get_or_init(|| {
        Arc::new(
            DecisionGate::builder()
                .provider(Arc::new(TimeProvider::new(TimeConfig::default())))
                .unwrap_or_else(|e| unreachable!("the time provider registers: {e}"))
                .build(),
        )
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap_or_else(|e| unreachable!("a current-thread runtime starts: {e}"))
}

/// A scenario spec as JSON text: parsed with paths, validated, and, when valid, compiled (a
/// valid spec always compiles).
pub fn scenario_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = engine::parse_json::<ScenarioSpec>(text, 1 << 20) else {
        return;
    };
    if engine::validate_spec(&spec, None, None, &Limits::default()).is_empty() {
        let compiled = Plan::compile(spec, HashAlgorithm::Sha256);
        assert!(compiled.is_ok(), "a valid spec compiles: {compiled:?}");
    }
}

/// Tool arguments: the first byte picks a tool, the rest is its arguments as JSON text; every
/// input ends in a result or a tool error.
pub fn tool_arguments(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let action = Action::ALL[usize::from(first) % Action::ALL.len()];
    let Ok(args) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let _ = runtime().block_on(tools::call(
        gate(),
        &ToolPolicy::default(),
        &Caller::stdio(),
        action,
        args,
    ));
}

/// A gRPC request: the first byte picks a unary method, the rest is its protobuf message,
/// converted and served through the same service as the listener serves.
pub fn grpc_messages(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let shared = Shared::new(
        gate().clone(),
        ToolPolicy::default(),
        Arc::new(InMemoryAuditSink::default()),
        Metrics::new(),
    );
    // The fuzzed calls open no streams, so nothing ever cancels the token.
    let api = GrpcApi::new(
        shared,
        tokio_util::sync::CancellationToken::new(),
        &decision_gate_mcp::config::WatchLimits::default(),
    );
    fn request<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.extensions_mut().insert(Caller::stdio());
        request
    }
    macro_rules! call {
        ($method:ident, $message:ty) => {{
            if let Ok(message) = <$message>::decode(rest) {
                let _ = api.$method(request(message)).await;
            }
        }};
    }
    runtime().block_on(async {
        match first % 17 {
            0 => call!(define_scenario, pb::DefineScenarioRequest),
            1 => call!(start_run, pb::StartRunRequest),
            2 => call!(get_run_status, pb::GetRunStatusRequest),
            3 => call!(next, pb::NextRequest),
            4 => call!(submit, pb::SubmitRequest),
            5 => call!(trigger, pb::TriggerRequest),
            6 => call!(query_evidence, pb::QueryEvidenceRequest),
            7 => call!(export_runpack, pb::ExportRunpackRequest),
            8 => call!(verify_runpack, pb::VerifyRunpackRequest),
            9 => call!(list_providers, pb::ListProvidersRequest),
            10 => call!(get_provider_contract, pb::GetProviderContractRequest),
            11 => call!(get_provider_check_schema, pb::GetProviderCheckSchemaRequest),
            12 => call!(register_schema, pb::RegisterSchemaRequest),
            13 => call!(list_schemas, pb::ListRequest),
            14 => call!(get_schema, pb::GetSchemaRequest),
            15 => call!(list_scenarios, pb::ListRequest),
            _ => call!(precheck, pb::PrecheckRequest),
        }
    });
}

/// A runpack to verify offline: a JSON object mapping file paths to their text (the manifest
/// under `manifest.json`), or any other bytes as the manifest alone; verified with replay.
pub fn runpack_manifest(data: &[u8]) {
    let files: BTreeMap<String, Vec<u8>> =
        match serde_json::from_slice::<BTreeMap<String, String>>(data) {
            Ok(files) => files
                .into_iter()
                .map(|(path, text)| (path, text.into_bytes()))
                .collect(),
            Err(_) => BTreeMap::from([("manifest.json".to_owned(), data.to_vec())]),
        };
    let options = VerifyOptions {
        replay: true,
        trusted_keys: Vec::new(),
    };
    let _ = runpack::verify(&runpack::files_reader(&files), &options);
}

/// JSON text: its canonical form is a fixed point (parsing and canonicalising it again gives
/// the same bytes).
pub fn canonical_json(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(once) = canonical(&value) else {
        return;
    };
    let again: serde_json::Value =
        serde_json::from_slice(&once).unwrap_or_else(|e| panic!("canonical JSON parses: {e}"));
    let twice = canonical(&again).unwrap_or_else(|e| panic!("canonical JSON canonicalises: {e}"));
    assert_eq!(once, twice, "canonical JSON is a fixed point");
}
