//! Runpacks: export, verification, tamper detection with precise reports, replay, signatures,
//! determinism of root hashes, and the filesystem store's confinement.

use std::collections::BTreeMap;
use std::sync::Arc;

use decision_gate_core::engine::ConditionOrder;
use decision_gate_core::hashing::canonical_json;
use decision_gate_core::runpack::{
    self, DirReader, FsRunpackStore, MANIFEST_PATH, Reader as _, VerifyOptions, VerifyReport,
};
use decision_gate_core::service::{ExportResult, SubmitRequest};
use decision_gate_core::spec::PacketPayload;
use decision_gate_core::store::{RunpackKey, RunpackStore};
use decision_gate_core::{DecisionGate, EngineConfig, HashAlgorithm, Timestamp};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};

use crate::support::*;

fn scenario() -> Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [
            {"stage_id": "one", "gates": [
                {"gate_id": "g1", "requirement": {"And": [{"Condition": "ca"}, {"Or": [{"Condition": "cb"}, {"Condition": "cc"}]}]}},
                {"gate_id": "g2", "requirement": {"RequireGroup": {"min": 1, "reqs": [{"Condition": "cb"}, {"Condition": "cc"}]}}}
             ],
             "entry_packets": [{"packet_id": "brief", "schema_id": "x", "content_type": "application/json", "payload": {"kind": "json", "value": {"task": 1}}}],
             "advance_to": {"kind": "linear"}},
            {"stage_id": "two", "gates": [{"gate_id": "g3", "requirement": {"Not": {"Condition": "cd"}}}],
             "entry_packets": [{"packet_id": "key", "schema_id": "x", "content_type": "application/octet-stream", "payload": {"kind": "bytes", "bytes": [7, 7]}}],
             "advance_to": {"kind": "terminal"}}
        ],
        "conditions": [cond("ca", "a"), cond("cb", "b"), cond("cc", "c"), cond("cd", "d")]
    })
}

/// Drives a run through a hold, an advance, a submission and completion, then exports it.
async fn exported_with(
    gate: &DecisionGate,
    facts: &decision_gate_core::InMemoryEvidence,
) -> ExportResult {
    define(gate, &scenario()).await;
    start(gate, "s", "r").await;
    set(facts, "a", json!(true));
    next(gate, "s", "r", "t1", 1).await.unwrap();
    set(facts, "c", json!(true));
    set(facts, "d", json!(false));
    next(gate, "s", "r", "t2", 2).await.unwrap();
    let submit = SubmitRequest {
        scenario_id: id("s"),
        run_id: id("r"),
        submission_id: id("report"),
        payload: PacketPayload::Json {
            value: json!({"ok": true}).into(),
        },
        content_type: "application/json".into(),
        submitted_at: Timestamp::Logical(3),
    };
    gate.submit(&ctx(), submit).await.unwrap();
    next(gate, "s", "r", "t3", 4).await.unwrap();
    gate.export_runpack(&ctx(), &id("s"), &id("r"), Timestamp::Logical(10), None)
        .await
        .unwrap()
}

/// Reads every file of a stored runpack.
async fn files_of(gate_store: &dyn RunpackStore, key: &RunpackKey) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for path in gate_store.list_files(key).await.unwrap() {
        files.insert(
            path.clone(),
            gate_store.get_file(key, &path).await.unwrap().unwrap(),
        );
    }
    files
}

fn check(files: &BTreeMap<String, Vec<u8>>, replay: bool) -> VerifyReport {
    runpack::verify(
        &runpack::files_reader(files),
        &VerifyOptions {
            replay,
            ..VerifyOptions::default()
        },
    )
}

/// Recomputes the hashes of `path` and the root in the manifest, as a careful forger would.
fn reseal(files: &mut BTreeMap<String, Vec<u8>>, path: &str) {
    let mut manifest: Value = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    let hash = serde_json::to_value(HashAlgorithm::Sha256.digest(&files[path])).unwrap();
    for list in ["artifacts"] {
        for a in manifest[list].as_array_mut().unwrap() {
            if a["path"] == path {
                a["hash"] = hash.clone();
            }
        }
    }
    for f in manifest["integrity"]["file_hashes"].as_array_mut().unwrap() {
        if f["path"] == path {
            f["hash"] = hash.clone();
        }
    }
    let root = HashAlgorithm::Sha256
        .digest(&canonical_json(&manifest["integrity"]["file_hashes"]).unwrap());
    manifest["integrity"]["root_hash"] = serde_json::to_value(root).unwrap();
    files.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
}

/// Edits the JSON of an artifact in place.
fn edit(files: &mut BTreeMap<String, Vec<u8>>, path: &str, f: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&files[path]).unwrap();
    f(&mut value);
    files.insert(path.into(), canonical_json(&value).unwrap());
}

fn assert_fails(report: &VerifyReport, check: &str, artifact: &str, entry: Option<&str>) {
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.check == check && f.artifact == artifact && f.entry.as_deref() == entry),
        "expected a {check} failure on {artifact} {entry:?}, got {:#?}",
        report.failures
    );
}

#[tokio::test]
async fn export_then_verify_with_replay_passes() {
    let facts = facts();
    let gate = builder(&facts).build();
    let export = exported_with(&gate, &facts).await;
    let options = VerifyOptions {
        replay: true,
        ..Default::default()
    };
    let report = gate
        .verify_runpack(&ctx(), &id("r"), &export.key.export_id, &options)
        .await
        .unwrap();
    assert!(report.passed(), "{:#?}", report.failures);
    assert!(report.replayed);
    assert_eq!(
        report.checked_files, 8,
        "seven artifacts and the export-time report"
    );
    assert_eq!(export.manifest.artifacts.len(), 8);
    assert!(
        export.key.export_id.starts_with("rev5-"),
        "{}",
        export.key.export_id
    );
    let again = gate
        .export_runpack(&ctx(), &id("s"), &id("r"), Timestamp::Logical(11), None)
        .await
        .unwrap();
    assert_eq!(
        (&again.key, &again.manifest),
        (&export.key, &export.manifest),
        "a stored export is returned, never overwritten"
    );
    assert!(again.uri.is_none() && export.uri.is_some());
}

#[tokio::test]
async fn flipping_one_byte_in_any_artifact_is_reported_with_its_path() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let files = files_of(store.as_ref(), &export.key).await;
    assert!(check(&files, true).passed());
    for artifact in export.manifest.artifacts.iter().map(|a| a.path.clone()) {
        let mut tampered = files.clone();
        let bytes = tampered.get_mut(&artifact).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x01;
        let report = check(&tampered, false);
        assert_fails(&report, "file_hash", &artifact, None);
    }
}

#[tokio::test]
async fn edited_decisions_duplicates_and_spec_hashes_are_named() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let files = files_of(store.as_ref(), &export.key).await;
    let decisions = "artifacts/decisions.json";

    // An edited decision with its hashes recomputed: replay names it.
    let mut edited = files.clone();
    edit(&mut edited, decisions, |d| {
        d[1]["outcome"] = json!({"kind": "fail", "reason": "forged"})
    });
    reseal(&mut edited, decisions);
    assert!(
        check(&edited, false).passed(),
        "integrity alone cannot see a careful forgery"
    );
    assert_fails(
        &check(&edited, true),
        "replay",
        decisions,
        Some("decision-2"),
    );

    // A duplicated trigger decision.
    let mut duplicated = files.clone();
    edit(&mut duplicated, decisions, |d| {
        let copy = d[1].clone();
        d.as_array_mut().unwrap().push(copy);
    });
    reseal(&mut duplicated, decisions);
    assert_fails(
        &check(&duplicated, false),
        "duplicate",
        decisions,
        Some("decision-2"),
    );

    // A manifest whose spec hash was changed.
    let mut respecced = files.clone();
    let mut manifest: Value = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    manifest["spec_hash"]["value"] = json!("00".repeat(32));
    respecced.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
    assert_fails(
        &check(&respecced, false),
        "spec_hash",
        "artifacts/scenario_spec.json",
        None,
    );

    // An unsupported manifest version stops verification at once.
    let mut v2 = files.clone();
    manifest = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    manifest["manifest_version"] = json!("v2");
    v2.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
    let report = check(&v2, true);
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0]
            .message
            .contains("unsupported manifest version: v2")
    );
}

#[tokio::test]
async fn replay_catches_an_edited_gate_outcome_with_recomputed_hashes() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let mut files = files_of(store.as_ref(), &export.key).await;
    let gates = "artifacts/gate_evals.json";
    // Trigger t1 held on g1 (b and c unknown): claim g1 was true.
    edit(&mut files, gates, |g| {
        let first = g
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|r| r["trigger_id"] == "t1" && r["evaluation"]["gate_id"] == "g1")
            .unwrap();
        assert_eq!(first["evaluation"]["status"], "Unknown");
        first["evaluation"]["status"] = json!("True");
    });
    reseal(&mut files, gates);
    assert!(
        check(&files, false).passed(),
        "the forgery is consistent without replay"
    );
    let report = check(&files, true);
    assert_fails(&report, "replay", gates, Some("gate g1 (trigger t1)"));
    let failure = report
        .failures
        .iter()
        .find(|f| f.check == "replay")
        .unwrap();
    assert!(
        failure.message.contains("\"True\"") && failure.message.contains("\"Unknown\""),
        "{}",
        failure.message
    );
}

#[tokio::test]
async fn evidence_and_packet_hashes_are_checked_against_their_values() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let files = files_of(store.as_ref(), &export.key).await;

    let mut evidence = files.clone();
    let gates = "artifacts/gate_evals.json";
    edit(&mut evidence, gates, |g| {
        g[0]["evidence"][0]["result"]["value"] = json!({"kind": "json", "value": false})
    });
    reseal(&mut evidence, gates);
    assert_fails(
        &check(&evidence, false),
        "evidence_hash",
        gates,
        Some("condition ca of gate g1 (trigger t1)"),
    );

    let mut packet = files.clone();
    let packets = "artifacts/packets.json";
    edit(&mut packet, packets, |p| {
        p[0]["payload"]["value"]["task"] = json!(2)
    });
    reseal(&mut packet, packets);
    assert_fails(
        &check(&packet, false),
        "content_hash",
        packets,
        Some("packet brief (decision-1)"),
    );
}

#[tokio::test]
async fn signatures_bind_the_manifest_to_a_trusted_key() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let signer = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    let gate = builder(&facts)
        .runpack_store(store.clone())
        .runpack_signer(signer.clone())
        .build();
    let export = exported_with(&gate, &facts).await;
    let files = files_of(store.as_ref(), &export.key).await;
    assert!(files.contains_key(runpack::SIGNATURE_PATH));
    let trusting = |key: &SigningKey| VerifyOptions {
        replay: true,
        trusted_keys: vec![key.verifying_key()],
    };
    let reader = runpack::files_reader(&files);
    assert!(runpack::verify(&reader, &trusting(&signer)).passed());
    let untrusted = runpack::verify(&reader, &trusting(&other));
    assert_fails(&untrusted, "signature", runpack::SIGNATURE_PATH, None);
    assert!(untrusted.failures[0].message.contains("untrusted key"));

    // A re-sealed manifest no longer matches its signature.
    let mut forged = files.clone();
    let decisions = "artifacts/decisions.json";
    edit(&mut forged, decisions, |d| {
        d[0]["correlation_id"] = json!("x")
    });
    reseal(&mut forged, decisions);
    assert_fails(
        &runpack::verify(&runpack::files_reader(&forged), &trusting(&signer)),
        "signature",
        MANIFEST_PATH,
        None,
    );

    // Requiring a signature refuses an unsigned runpack.
    let mut unsigned = files.clone();
    unsigned.remove(runpack::SIGNATURE_PATH);
    assert_fails(
        &runpack::verify(&runpack::files_reader(&unsigned), &trusting(&signer)),
        "signature",
        runpack::SIGNATURE_PATH,
        None,
    );
}

async fn root_hash_with(order: ConditionOrder) -> String {
    let facts = facts();
    let gate = service_with(
        &facts,
        EngineConfig {
            condition_order: order,
            ..EngineConfig::default()
        },
    );
    define(&gate, &scenario()).await;
    start(&gate, "s", "r").await;
    set(&facts, "a", json!(true));
    set(&facts, "b", json!(true));
    next(&gate, "s", "r", "t1", 1).await.unwrap();
    next(&gate, "s", "r", "t2", 2).await.unwrap();
    gate.export_runpack(&ctx(), &id("s"), &id("r"), Timestamp::Logical(9), None)
        .await
        .unwrap()
        .manifest
        .integrity
        .root_hash
        .value
}

#[tokio::test]
async fn shuffled_query_order_gives_identical_root_hashes() {
    let baseline = root_hash_with(ConditionOrder::Spec).await;
    assert_eq!(
        root_hash_with(ConditionOrder::DeterministicShuffle { seed: 7 }).await,
        baseline
    );
    assert_eq!(
        root_hash_with(ConditionOrder::DeterministicShuffle { seed: 11 }).await,
        baseline
    );
}

#[tokio::test]
async fn reordered_spec_conditions_change_only_the_spec_artifact() {
    let facts_a = facts();
    let facts_b = facts();
    let a = builder(&facts_a).build();
    let b = builder(&facts_b).build();
    let mut reversed = scenario();
    reversed["conditions"].as_array_mut().unwrap().reverse();
    for (gate, facts, spec) in [(&a, &facts_a, scenario()), (&b, &facts_b, reversed)] {
        define(gate, &spec).await;
        start(gate, "s", "r").await;
        set(facts, "a", json!(true));
        set(facts, "c", json!(true));
        next(gate, "s", "r", "t1", 1).await.unwrap();
    }
    let hashes = |e: &ExportResult| {
        e.manifest
            .integrity
            .file_hashes
            .iter()
            .map(|f| (f.path.clone(), f.hash.value.clone()))
            .collect::<Vec<_>>()
    };
    let ea = a
        .export_runpack(&ctx(), &id("s"), &id("r"), Timestamp::Logical(9), None)
        .await
        .unwrap();
    let eb = b
        .export_runpack(&ctx(), &id("s"), &id("r"), Timestamp::Logical(9), None)
        .await
        .unwrap();
    let (ha, hb) = (hashes(&ea), hashes(&eb));
    assert_eq!(ha.len(), hb.len());
    for (x, y) in ha.iter().zip(&hb) {
        if x.0 == "artifacts/scenario_spec.json" {
            assert_ne!(x, y, "the spec itself differs");
        } else {
            assert_eq!(x, y, "every log is identical");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_give_identical_root_hashes() {
    let tasks: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async { root_hash_with(ConditionOrder::Spec).await }))
        .collect();
    let mut hashes = Vec::new();
    for t in tasks {
        hashes.push(t.await.unwrap());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
}

#[tokio::test]
async fn the_filesystem_store_verifies_offline_and_stays_in_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsRunpackStore::open(dir.path().join("runpacks")).unwrap());
    let facts = facts();
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let on_disk = store.runpack_dir(&export.key);
    assert!(
        export
            .uri
            .as_deref()
            .is_some_and(|u| u.starts_with("runpacks/t1/n1/") && !u.contains("/tmp"))
    );
    let report = runpack::verify(
        &DirReader::new(&on_disk),
        &VerifyOptions {
            replay: true,
            ..Default::default()
        },
    );
    assert!(report.passed(), "{:#?}", report.failures);

    for bad in ["../escape.json", "/etc/passwd", "a/../../b", "./x", ""] {
        let err = store.put_file(&export.key, bad, b"x").await.unwrap_err();
        assert_eq!(
            err.to_string().split(':').next(),
            Some("path"),
            "{bad}: {err}"
        );
        assert!(DirReader::new(&on_disk).read(bad).is_err(), "{bad}");
    }
    // A symlink inside the root that points outside is never followed.
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, on_disk.join("link")).unwrap();
    let err = store
        .put_file(&export.key, "link/file.json", b"x")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert!(!outside.join("file.json").exists());
    std::fs::write(outside.join("secret.json"), b"{}").unwrap();
    assert!(
        DirReader::new(&on_disk)
            .read("link/secret.json")
            .unwrap_err()
            .contains("symlink")
    );

    // Ids that are not plain path segments cannot escape either.
    let mut odd = export.key.clone();
    odd.export_id = "../../x".into();
    store.put_file(&odd, "f.json", b"{}").await.unwrap();
    assert!(
        store
            .runpack_dir(&odd)
            .starts_with(dir.path().join("runpacks"))
    );
    assert_eq!(store.list_files(&odd).await.unwrap(), ["f.json"]);
}

#[tokio::test]
async fn oversized_artifacts_are_refused_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("big.json"),
        vec![b' '; runpack::MAX_ARTIFACT_BYTES + 1],
    )
    .unwrap();
    let err = DirReader::new(dir.path()).read("big.json").unwrap_err();
    assert!(err.contains("artifact too large"), "{err}");
    std::fs::write(
        dir.path().join("ok.json"),
        vec![b' '; runpack::MAX_ARTIFACT_BYTES],
    )
    .unwrap();
    assert!(
        DirReader::new(dir.path())
            .read("ok.json")
            .unwrap()
            .is_some(),
        "the limit is inclusive"
    );
}

#[tokio::test]
async fn runpacks_of_other_tenants_are_not_found() {
    let facts = facts();
    let gate = builder(&facts).build();
    let export = exported_with(&gate, &facts).await;
    let err = gate
        .verify_runpack(
            &ctx_in(2, 1),
            &id("r"),
            &export.key.export_id,
            &VerifyOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found");
}

#[tokio::test]
async fn a_crafted_runpack_without_stages_is_reported_not_a_crash() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let mut files = files_of(store.as_ref(), &export.key).await;
    let spec = "artifacts/scenario_spec.json";
    edit(&mut files, spec, |s| s["stages"] = json!([]));
    reseal(&mut files, spec);
    let report = check(&files, true);
    assert!(!report.passed());
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.check == "replay" && f.message.contains("no stages")),
        "{:#?}",
        report.failures
    );
}

/// Anything but a regular file is refused at once: a FIFO (which would block a reader waiting
/// for a writer) and a directory.
#[test]
fn a_fifo_or_a_directory_is_not_read_as_an_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(dir.path().join("pipe.json"))
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    std::fs::create_dir(dir.path().join("sub.json")).unwrap();
    let reader = DirReader::new(dir.path());
    for path in ["pipe.json", "sub.json"] {
        let err = reader.read(path).unwrap_err();
        assert!(err.contains("not a regular file"), "{path}: {err}");
    }
}

/// Verifies `files` with a reader that records every path read.
fn check_counting_reads(files: &BTreeMap<String, Vec<u8>>) -> (VerifyReport, Vec<String>) {
    let reads = std::cell::RefCell::new(Vec::new());
    let reader = |path: &str| -> Result<Option<Vec<u8>>, String> {
        reads.borrow_mut().push(path.to_owned());
        Ok(files.get(path).cloned())
    };
    let report = runpack::verify(&reader, &VerifyOptions::default());
    (report, reads.into_inner())
}

/// A manifest that names a file under another form of its path (`a//b`, `a/./b`), or twice,
/// gets each such entry refused unread, so no file is read more than once; a manifest listing
/// more files than a runpack can hold is refused before any of them is read.
#[tokio::test]
async fn aliased_duplicated_and_overlong_file_lists_are_refused_unread() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let mut files = files_of(store.as_ref(), &export.key).await;
    let mut manifest: Value = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    let listed = manifest["integrity"]["file_hashes"]
        .as_array()
        .unwrap()
        .clone();
    let triggers = listed
        .iter()
        .find(|f| f["path"] == "artifacts/triggers.json")
        .unwrap()
        .clone();
    let mut aliased = listed.clone();
    for alias in [
        "artifacts//triggers.json",
        "artifacts/./triggers.json",
        "artifacts/triggers.json",
    ] {
        let mut entry = triggers.clone();
        entry["path"] = json!(alias);
        aliased.push(entry);
    }
    manifest["integrity"]["file_hashes"] = json!(aliased);
    files.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
    let (report, reads) = check_counting_reads(&files);
    assert_fails(&report, "manifest", "artifacts//triggers.json", None);
    assert_fails(&report, "manifest", "artifacts/./triggers.json", None);
    assert!(
        report.failures.iter().any(
            |f| f.artifact == "artifacts/triggers.json" && f.message == "listed more than once"
        ),
        "{:#?}",
        report.failures
    );
    let mut distinct = reads.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        reads.len(),
        "each file read once: {reads:?}"
    );
    assert!(!reads.iter().any(|p| p.contains("//") || p.contains("/./")));

    let too_many: Vec<Value> = (0..=runpack::MAX_MANIFEST_FILES)
        .map(|i| {
            let mut entry = triggers.clone();
            entry["path"] = json!(format!("artifacts/copy-{i}.json"));
            entry
        })
        .collect();
    manifest["integrity"]["file_hashes"] = json!(too_many);
    files.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
    let (report, reads) = check_counting_reads(&files);
    assert!(
        !reads.iter().any(|p| p.starts_with("artifacts/")),
        "no listed file is read: {reads:?}"
    );
    let refusal = report
        .failures
        .iter()
        .find(|f| f.check == "manifest" && f.artifact == MANIFEST_PATH)
        .expect("the list is refused");
    assert!(
        refusal.message.contains(&format!(
            "lists {} files; the limit is {}",
            runpack::MAX_MANIFEST_FILES + 1,
            runpack::MAX_MANIFEST_FILES
        )),
        "{refusal}"
    );
}

/// The files of one runpack are read up to `MAX_RUNPACK_BYTES` together: the file that crosses
/// it is reported and nothing after it is read.
#[tokio::test]
async fn a_runpack_larger_than_the_total_cap_stops_being_read() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let files = files_of(store.as_ref(), &export.key).await;
    let mut manifest: Value = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    let entry = manifest["integrity"]["file_hashes"][0].clone();
    let per_file = runpack::MAX_ARTIFACT_BYTES;
    let fit = runpack::MAX_RUNPACK_BYTES / per_file;
    let big: Vec<Value> = (0..fit + 2)
        .map(|i| {
            let mut e = entry.clone();
            e["path"] = json!(format!("big/{i}.json"));
            e
        })
        .collect();
    manifest["integrity"]["file_hashes"] = json!(big);
    let manifest = canonical_json(&manifest).unwrap();
    let reads = std::cell::RefCell::new(Vec::new());
    let reader = |path: &str| -> Result<Option<Vec<u8>>, String> {
        if path == MANIFEST_PATH {
            return Ok(Some(manifest.clone()));
        }
        reads.borrow_mut().push(path.to_owned());
        Ok(path.starts_with("big/").then(|| vec![b' '; per_file]))
    };
    let report = runpack::verify(&reader, &VerifyOptions::default());
    let crossing = format!("big/{fit}.json");
    let failure = report
        .failures
        .iter()
        .find(|f| f.artifact == crossing && f.message.contains("together"))
        .unwrap_or_else(|| panic!("{crossing} is refused: {:#?}", report.failures));
    assert!(
        failure
            .message
            .contains(&runpack::MAX_RUNPACK_BYTES.to_string()),
        "{failure}"
    );
    let big_reads = reads
        .borrow()
        .iter()
        .filter(|p| p.starts_with("big/"))
        .count();
    assert_eq!(
        big_reads,
        fit + 1,
        "nothing read after the file that crossed the cap"
    );
}

/// Every directory the filesystem store creates is 0700 and every file 0600.
#[cfg(unix)]
#[tokio::test]
async fn runpack_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("runpacks");
    let store = Arc::new(FsRunpackStore::open(&root).unwrap());
    let facts = facts();
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    assert_eq!(mode(&root), 0o700);
    let mut checked = 0;
    let mut pending = vec![store.runpack_dir(&export.key)];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                pending.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 9,
        "the manifest and the artifacts were checked: {checked}"
    );
    let mut ancestor = store.runpack_dir(&export.key);
    while ancestor != root {
        assert_eq!(mode(&ancestor), 0o700, "{}", ancestor.display());
        ancestor = ancestor.parent().unwrap().to_path_buf();
    }
}

/// A file the verifier does not parse is hashed as it is read, never held whole: through a
/// directory its digest is computed 64 KiB at a time, and a reader that answers digests is
/// never asked for the file's bytes.
#[tokio::test]
async fn files_the_verifier_does_not_parse_are_hashed_as_they_are_read() {
    let facts = facts();
    let store = Arc::new(decision_gate_core::runpack::MemoryRunpackStore::default());
    let gate = builder(&facts).runpack_store(store.clone()).build();
    let export = exported_with(&gate, &facts).await;
    let mut files = files_of(store.as_ref(), &export.key).await;
    // An extra file of 3 MiB and a bit, listed with its true hash, the root resealed.
    let blob: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect();
    let mut manifest: Value = serde_json::from_slice(&files[MANIFEST_PATH]).unwrap();
    let hashes = manifest["integrity"]["file_hashes"].as_array_mut().unwrap();
    hashes.push(json!({"path": "extra/blob.bin", "hash": HashAlgorithm::Sha256.digest(&blob)}));
    let root = HashAlgorithm::Sha256.digest(&canonical_json(&hashes).unwrap());
    manifest["integrity"]["root_hash"] = serde_json::to_value(root).unwrap();
    files.insert(MANIFEST_PATH.into(), canonical_json(&manifest).unwrap());
    files.insert("extra/blob.bin".into(), blob.clone());

    struct DigestsOnly<'a> {
        files: &'a BTreeMap<String, Vec<u8>>,
        read: std::cell::RefCell<Vec<String>>,
    }
    impl runpack::Reader for DigestsOnly<'_> {
        fn read(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
            self.read.borrow_mut().push(path.to_owned());
            Ok(self.files.get(path).cloned())
        }
        fn digest(
            &self,
            path: &str,
            algorithm: HashAlgorithm,
        ) -> Result<Option<(decision_gate_core::hashing::HashDigest, usize)>, String> {
            Ok(self.files.get(path).map(|b| (algorithm.digest(b), b.len())))
        }
    }
    let reader = DigestsOnly {
        files: &files,
        read: std::cell::RefCell::new(Vec::new()),
    };
    let report = runpack::verify(&reader, &VerifyOptions::default());
    assert!(report.passed(), "{:#?}", report.failures);
    assert!(
        !reader.read.borrow().iter().any(|p| p == "extra/blob.bin"),
        "the extra file's bytes were never asked for: {:?}",
        reader.read.borrow()
    );

    // The same runpack on disk: the streamed digest agrees, and a changed byte is caught.
    let dir = tempfile::tempdir().unwrap();
    for (path, bytes) in &files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, bytes).unwrap();
    }
    let on_disk = runpack::verify(&DirReader::new(dir.path()), &VerifyOptions::default());
    assert!(on_disk.passed(), "{:#?}", on_disk.failures);
    let mut changed = blob;
    changed[2 * 1024 * 1024] ^= 1;
    std::fs::write(dir.path().join("extra/blob.bin"), changed).unwrap();
    let tampered = runpack::verify(&DirReader::new(dir.path()), &VerifyOptions::default());
    assert_fails(&tampered, "file_hash", "extra/blob.bin", None);
}
