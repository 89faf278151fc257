//! The `decision-gate` binary, end to end: quickstart, scenario validation, runpack export and
//! verification, exit codes and JSON output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

mod config;
mod docs;

fn decision_gate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_decision-gate"))
        .args(args)
        .output()
        .expect("run decision-gate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("one JSON document on stdout ({e}): {}", stdout(output)))
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/scenarios")
        .join(name)
}

/// Runs the quickstart in `data_dir` and returns the runpack directory it verified.
fn quickstart(data_dir: &Path) -> PathBuf {
    let output = decision_gate(&[
        "quickstart",
        "--json",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let doc = json(&output);
    assert_eq!(doc["status"], "pass");
    PathBuf::from(doc["runpack"].as_str().unwrap())
}

#[test]
fn quickstart_holds_advances_completes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let output = decision_gate(&["quickstart", "--data-dir", dir.path().to_str().unwrap()]);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    let order = [
        "\"kind\":\"hold\"",
        "\"kind\":\"advance\"",
        "release-notes",
        "\"kind\":\"complete\"",
        "PASS",
        "every decision replayed",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|s| {
            text.find(s)
                .unwrap_or_else(|| panic!("{s} missing from:\n{text}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");

    // A second quickstart in the same data directory makes a new run.
    let doc = json(&decision_gate(&[
        "quickstart",
        "--json",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(doc["run_id"], "quickstart-2");
    assert_eq!(doc["decisions"].as_array().unwrap().len(), 3);
    assert_eq!(doc["verification"]["checked_files"], 8);
}

/// What the server keeps at rest is its owner's alone: the data directory and the runpacks
/// under it 0700; the database and the audit file 0600 (its WAL in the core's tests).
#[cfg(unix)]
#[test]
fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let runpack = quickstart(&data);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    for private_dir in [data.clone(), data.join("runpacks"), runpack.clone()] {
        assert_eq!(mode(&private_dir), 0o700, "{}", private_dir.display());
    }
    for file in ["decision-gate.db", "audit.jsonl"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&runpack.join("manifest.json")), 0o600);
}

/// The README's first command: no arguments, from a fresh directory, so the data directory is
/// the relative default (`dg-data`); and a relative `--data-dir`.
#[test]
fn quickstart_runs_with_relative_data_directories() {
    let cwd = tempfile::tempdir().unwrap();
    for args in [&["quickstart"][..], &["quickstart", "--data-dir", "qs"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_decision-gate"))
            .args(args)
            .current_dir(cwd.path())
            .output()
            .expect("run decision-gate");
        assert!(
            output.status.success(),
            "{args:?}: {}{}",
            stdout(&output),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout(&output).contains("PASS"), "{}", stdout(&output));
    }
    assert!(cwd.path().join("dg-data/evidence").is_dir());
    assert!(cwd.path().join("qs/evidence").is_dir());
    assert!(!cwd.path().join("dg-data/dg-data").exists());
}

#[test]
fn runpack_verify_passes_and_names_what_was_tampered_with() {
    let dir = tempfile::tempdir().unwrap();
    let runpack = quickstart(dir.path());
    let runpack_arg = runpack.to_str().unwrap();
    let ok = decision_gate(&["runpack", "verify", "--replay", runpack_arg]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert!(stdout(&ok).starts_with("PASS"));

    let decisions = runpack.join("artifacts/decisions.json");
    let mut bytes = std::fs::read(&decisions).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&decisions, bytes).unwrap();
    let failed = decision_gate(&["runpack", "verify", "--replay", runpack_arg]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stdout(&failed).contains("file_hash: artifacts/decisions.json: hash mismatch"),
        "{}",
        stdout(&failed)
    );
    let doc = json(&decision_gate(&[
        "runpack",
        "verify",
        "--json",
        runpack_arg,
    ]));
    assert_eq!(doc["status"], "fail");
    assert!(
        doc["failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["check"] == "file_hash" && f["artifact"] == "artifacts/decisions.json")
    );
}

#[test]
fn a_required_signature_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let runpack = quickstart(dir.path());
    let key = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let output = decision_gate(&[
        "runpack",
        "verify",
        "--trusted-key",
        key,
        runpack.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("a signature is required"),
        "{}",
        stdout(&output)
    );
    let bad = decision_gate(&[
        "runpack",
        "verify",
        "--trusted-key",
        "zz",
        runpack.to_str().unwrap(),
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a malformed key is a usage error"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--trusted-key must be 64 hex digits"));
}

#[test]
fn runpack_export_writes_a_verifiable_runpack() {
    let dir = tempfile::tempdir().unwrap();
    quickstart(dir.path());
    let data = dir.path().to_str().unwrap();
    let output = decision_gate(&[
        "runpack",
        "export",
        "--json",
        "--data-dir",
        data,
        "--scenario",
        "quickstart",
        "--run",
        "quickstart-1",
        "--generated-at",
        "0",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let exported = json(&output);
    let runpack = exported["dir"].as_str().unwrap();
    assert!(
        decision_gate(&["runpack", "verify", "--replay", runpack])
            .status
            .success()
    );
    let missing = decision_gate(&[
        "runpack",
        "export",
        "--data-dir",
        data,
        "--scenario",
        "quickstart",
        "--run",
        "nope",
    ]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("run not found: nope"));
}

/// `[runpacks] signing_key_file` signs exports; verification trusts the configured keys (the
/// signer's among them), replays by default, and refuses an unsigned runpack once a key is
/// trusted. A key file others can read is refused by name.
#[test]
fn runpacks_are_signed_with_the_configured_key_and_verified_against_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let exported = quickstart(dir.path());
    // The same content exports to the same id, and a stored export is never rewritten: move
    // the quickstart's unsigned export aside so the signed export is written anew.
    let unsigned = dir.path().join("unsigned");
    std::fs::rename(&exported, &unsigned).unwrap();
    let key_file = dir.path().join("runpack.key");
    std::fs::write(
        &key_file,
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60\n",
    )
    .unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The public key of that seed (RFC 8032, test 1).
    let public = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let config = dir.path().join("decision-gate.toml");
    std::fs::write(
        &config,
        "[runpacks]\nsigning_key_file = \"runpack.key\"\ntrusted_keys = []\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let data = dir.path().to_str().unwrap();
    let output = decision_gate(&[
        "runpack",
        "export",
        "--json",
        "--config",
        config_arg,
        "--data-dir",
        data,
        "--scenario",
        "quickstart",
        "--run",
        "quickstart-1",
        "--generated-at",
        "1",
    ]);
    assert!(
        output.status.success(),
        "{}{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    let signed = PathBuf::from(json(&output)["dir"].as_str().unwrap());
    assert!(
        signed.join("manifest.sig").is_file(),
        "the export is signed"
    );
    let verified = json(&decision_gate(&[
        "runpack",
        "verify",
        "--json",
        "--trusted-key",
        public,
        signed.to_str().unwrap(),
    ]));
    assert_eq!(verified["status"], "pass", "{verified}");
    assert_eq!(
        verified["replayed"], true,
        "replay is the default: {verified}"
    );
    let skipped = json(&decision_gate(&[
        "runpack",
        "verify",
        "--json",
        "--no-replay",
        signed.to_str().unwrap(),
    ]));
    assert_eq!(skipped["replayed"], false, "{skipped}");

    // A configuration that trusts a key makes an unsigned runpack fail.
    std::fs::write(
        &config,
        format!("[runpacks]\ntrusted_keys = [\"{public}\"]\n"),
    )
    .unwrap();
    let refused = decision_gate(&[
        "runpack",
        "verify",
        "--config",
        config_arg,
        unsigned.to_str().unwrap(),
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stdout(&refused).contains("a signature is required"),
        "{}",
        stdout(&refused)
    );
    let passes = decision_gate(&[
        "runpack",
        "verify",
        "--config",
        config_arg,
        signed.to_str().unwrap(),
    ]);
    assert!(passes.status.success(), "{}", stdout(&passes));

    // A signing key others can read is refused, naming the key.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&config, "[runpacks]\nsigning_key_file = \"runpack.key\"\n").unwrap();
    let loose = decision_gate(&["config", "check", "--config", config_arg]);
    assert_eq!(loose.status.code(), Some(1), "{}", stdout(&loose));
    let text = format!(
        "{}{}",
        stdout(&loose),
        String::from_utf8_lossy(&loose.stderr)
    );
    assert!(
        text.contains("runpacks.signing_key_file") && text.contains("chmod 600"),
        "{text}"
    );
}

#[test]
fn scenario_validate_reports_every_broken_rule_with_its_path() {
    let valid = decision_gate(&[
        "scenario",
        "validate",
        example("quickstart.json").to_str().unwrap(),
    ]);
    assert!(valid.status.success(), "{}", stdout(&valid));
    assert!(stdout(&valid).ends_with(": valid\n"));

    let dir = tempfile::tempdir().unwrap();
    let mut spec: Value =
        serde_json::from_str(&std::fs::read_to_string(example("quickstart.json")).unwrap())
            .unwrap();
    spec["stages"][0]["gates"][0]["requirement"] = serde_json::json!({"Condition": "ghost"});
    spec["conditions"][1]["query"]["params"] = serde_json::json!({});
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, spec.to_string()).unwrap();
    let output = decision_gate(&["scenario", "validate", "--json", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let doc = json(&output);
    let paths: Vec<&str> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"stages[0].gates[0].requirement.Condition"),
        "{paths:?}"
    );
    assert!(paths.contains(&"conditions[1].query.params"), "{paths:?}");
}

#[test]
fn usage_errors_exit_with_2() {
    assert_eq!(decision_gate(&["runpack", "verify"]).status.code(), Some(2));
    assert_eq!(decision_gate(&["no-such-command"]).status.code(), Some(2));
}
