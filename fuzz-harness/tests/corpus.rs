//! Replays every fuzz corpus (`fuzz/corpus/<target>/`) through its target on the stable
//! toolchain: inputs the fuzzer kept, and any crash it found once, run on every test run.

use std::path::Path;

use decision_gate_fuzz_harness::TARGETS;

#[test]
fn every_corpus_input_runs_through_its_target() {
    let corpora = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for (name, target) in TARGETS {
        let dir = corpora.join(name);
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "{name}: the corpus is empty");
        for input in inputs {
            let data = std::fs::read(&input).expect("corpus input");
            target(&data);
        }
    }
}
