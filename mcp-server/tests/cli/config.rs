//! `decision-gate config check`.

use std::path::Path;

use super::{decision_gate, json, stdout};

#[test]
fn the_documented_example_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/decision-gate.toml");
    let output = decision_gate(&[
        "config",
        "check",
        "--json",
        "--config",
        example.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", stdout(&output));
    let doc = json(&output);
    assert_eq!(
        doc["providers"],
        serde_json::json!(["env", "http", "json", "time"])
    );
}

#[test]
fn problems_are_named_by_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let file = dir.path().join("decision-gate.toml");
        std::fs::write(&file, text).unwrap();
        decision_gate(&["config", "check", "--config", file.to_str().unwrap()])
    };
    for (text, expected) in [
        (
            "[engine]\ncolour = 1\n",
            "engine.colour: unknown field `colour`",
        ),
        (
            "[engine.limits]\nmax_payload_bytes = \"big\"\n",
            "engine.limits.max_payload_bytes: invalid type",
        ),
        (
            "[engine.limits]\nmax_payload_bytes = 0\n",
            "engine.limits.max_payload_bytes: must be 1..=67108864, not 0",
        ),
        (
            "[engine.limits]\nmax_concurrent_queries = 0\n",
            "engine.limits.max_concurrent_queries: must be 1..=1024, not 0",
        ),
        (
            "[engine.limits]\nmax_concurrent_queries = 1025\n",
            "engine.limits.max_concurrent_queries: must be 1..=1024, not 1025",
        ),
        (
            "[engine.limits]\nmax_dispatch_targets = 10001\n",
            "engine.limits.max_dispatch_targets: must be 1..=10000, not 10001",
        ),
        (
            "[engine.limits]\nmax_array_items = 0\n",
            "engine.limits.max_array_items: must be 1..=1000000, not 0",
        ),
        (
            "[providers.json]\nroot = \"missing\"\nroot_id = \"r\"\n",
            "providers.json: json provider: root:",
        ),
        ("[providers.smtp]\n", "providers.smtp: unknown field `smtp`"),
        ("data_dir = \n", "$: "),
    ] {
        let output = check(text);
        assert_eq!(output.status.code(), Some(1), "{text}");
        assert!(
            stdout(&output).contains(expected),
            "{text}: {}",
            stdout(&output)
        );
    }
    assert!(
        check("[providers.env]\noverrides = { A = \"1\" }\n")
            .status
            .success()
    );
}

#[test]
fn a_missing_file_is_named() {
    let output = decision_gate(&["config", "check", "--config", "/no/such/decision-gate.toml"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("/no/such/decision-gate.toml: $: /no/such/decision-gate.toml"),
        "{stdout}"
    );
    let unset = std::process::Command::new(env!("CARGO_BIN_EXE_decision-gate"))
        .args(["config", "check"])
        .env_remove("DECISION_GATE_CONFIG")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unset.stderr).contains("DECISION_GATE_CONFIG"));
}
