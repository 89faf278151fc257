//! Durability of the journal: a killed writer leaves SQLite runs at a whole revision, and the
//! 10,000th trigger appends exactly one entry without touching history, on both stores.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use decision_gate_core::run::RunKey;
use decision_gate_core::store::RunStore;
use decision_gate_core::{DecisionGate, HashAlgorithm, InMemoryEvidence, MemoryStore, SqliteStore};
use serde_json::json;

use crate::support::*;

/// Set in the child process: the database it appends to until it is killed.
const CHILD_DB: &str = "DG_CRASH_CHILD_DB";

fn scenario() -> serde_json::Value {
    json!({
        "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
        "stages": [{"stage_id": "one", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}], "advance_to": {"kind": "terminal"}}],
        "conditions": [cond("c", "a")]
    })
}

async fn sqlite_gate(
    path: &Path,
    facts: &Arc<InMemoryEvidence>,
) -> (DecisionGate, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open(path).await.expect("open sqlite"));
    (builder(facts).store(store.clone()).build(), store)
}

/// Checks that the run's head and journal agree: revisions 1..=head, nothing torn.
async fn assert_consistent(store: &SqliteStore) -> u64 {
    let key = RunKey {
        tenant_id: ctx().tenant_id,
        namespace_id: ctx().namespace_id,
        run_id: id("r"),
    };
    let head = store
        .head(&key)
        .await
        .expect("read head")
        .expect("the run exists");
    let mut revisions = Vec::new();
    let mut after = 0;
    loop {
        let page = store
            .entries(&key, after, 1000)
            .await
            .expect("read entries");
        let Some(last) = page.last() else { break };
        after = last.revision;
        revisions.extend(page.iter().map(|e| e.revision));
    }
    assert_eq!(
        revisions,
        (1..=head.revision).collect::<Vec<_>>(),
        "the journal is exactly revisions 1..=head"
    );
    assert_eq!(
        head.counts.triggers, head.revision,
        "every entry is a trigger and the head counted each"
    );
    head.revision
}

/// In a normal run: 100 triggers, consistency checked after each. As the crash child (when
/// `DG_CRASH_CHILD_DB` is set): appends to that database until killed (at most 60 s).
#[tokio::test]
async fn sqlite_append_loop_is_consistent() {
    let child_db = std::env::var_os(CHILD_DB);
    let dir = tempfile::tempdir().unwrap();
    let path = child_db
        .clone()
        .map_or_else(|| dir.path().join("dg.db"), std::path::PathBuf::from);
    let facts = facts();
    let (gate, store) = sqlite_gate(path.as_ref(), &facts).await;
    define(&gate, &scenario()).await;
    // A child of a later round resumes the run its predecessor left.
    match gate.start_run(&ctx(), start_request("s", "r")).await {
        Err(e) if child_db.is_some() && e.kind() == "already_exists" => {}
        started => drop(started.expect("start the run")),
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let writer = std::process::id();
    for i in 1.. {
        next(&gate, "s", "r", &format!("w{writer}-t{i}"), i)
            .await
            .expect("trigger");
        if child_db.is_some() {
            if Instant::now() > deadline {
                return;
            }
            continue;
        }
        assert_eq!(assert_consistent(&store).await, i + 1);
        if i == 100 {
            break;
        }
    }
}

#[tokio::test]
async fn sqlite_survives_a_kill_mid_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dg.db");
    let mut last = 0;
    for round in 0..3u64 {
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "durability::sqlite_append_loop_is_consistent",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD_DB, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the writer");
        // Let it append for a while, then kill it without warning.
        let wait_until = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
            if child.try_wait().unwrap().is_some() {
                panic!("the writer exited before it was killed");
            }
            let store = SqliteStore::open(&path)
                .await
                .expect("open while the writer runs");
            let key = RunKey {
                tenant_id: ctx().tenant_id,
                namespace_id: ctx().namespace_id,
                run_id: id("r"),
            };
            let revision = store
                .head(&key)
                .await
                .ok()
                .flatten()
                .map_or(0, |h| h.revision);
            store.close().await;
            if revision > last + 20 || Instant::now() > wait_until {
                break;
            }
        }
        child.start_kill().expect("kill the writer");
        child.wait().await.expect("reap the writer");
        let store = SqliteStore::open(&path)
            .await
            .expect("reopen after the kill");
        let revision = assert_consistent(&store).await;
        assert!(
            revision > last,
            "round {round}: the writer made progress ({last} -> {revision})"
        );
        last = revision;
        store.close().await;
    }
    // The run goes on where it stopped.
    let facts = facts();
    let (gate, store) = sqlite_gate(&path, &facts).await;
    next(&gate, "s", "r", "after-crash", 1_000_000)
        .await
        .expect("a trigger after the crashes");
    assert_eq!(assert_consistent(&store).await, last + 1);
}

/// Drives 10,000 triggers, then checks the 10,000th appended one entry and left history alone.
async fn ten_thousandth_trigger(gate: &DecisionGate) {
    define(gate, &scenario()).await;
    start(gate, "s", "r").await;
    for i in 1..10_000 {
        next(gate, "s", "r", &format!("t{i}"), i)
            .await
            .expect("trigger");
    }
    let before = journal(gate, "s", "r").await;
    assert_eq!(before.len(), 10_000);
    let before_digest = HashAlgorithm::Sha256.digest_json(&before).unwrap();

    next(gate, "s", "r", "t10000", 10_000)
        .await
        .expect("the 10,000th trigger");

    let after = journal(gate, "s", "r").await;
    assert_eq!(after.len(), 10_001, "one entry appended");
    assert_eq!(
        HashAlgorithm::Sha256.digest_json(&after[..10_000]).unwrap(),
        before_digest,
        "history untouched"
    );
    let appended = &after[10_000];
    assert_eq!(appended.revision, 10_001);
    assert_eq!(appended.trigger_id().map(|t| t.as_str()), Some("t10000"));
    let tail = gate
        .journal(&ctx(), &id("s"), &id("r"), 10_000, 10)
        .await
        .unwrap();
    assert_eq!(tail, vec![appended.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousandth_trigger_appends_one_entry_in_memory() {
    let facts = facts();
    let gate = builder(&facts)
        .store(Arc::new(MemoryStore::default()))
        .build();
    ten_thousandth_trigger(&gate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousandth_trigger_appends_one_entry_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let facts = facts();
    let (gate, _) = sqlite_gate(&dir.path().join("dg.db"), &facts).await;
    ten_thousandth_trigger(&gate).await;
}

/// A run head whose stored bytes were changed behind the store's back is refused as corrupt
/// (fail closed), never served.
#[tokio::test]
async fn sqlite_refuses_a_tampered_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dg.db");
    let facts = facts();
    let (gate, store) = sqlite_gate(&path, &facts).await;
    define(&gate, &scenario()).await;
    start(&gate, "s", "r").await;
    drop(gate);
    drop(store);
    {
        use sqlx::Connection as _;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("UPDATE runs SET head_json = replace(head_json, '\"active\"', '\"failed\"')")
            .execute(&mut db)
            .await
            .unwrap();
        db.close().await.unwrap();
    }
    let (gate, _) = sqlite_gate(&path, &facts).await;
    let err = gate.status(&ctx(), &id("s"), &id("r")).await.unwrap_err();
    assert_eq!(err.kind(), "integrity_failure", "{err}");
}

/// With a trail, the SQLite store writes the audit event of each run write (a start, a
/// trigger) with its commit; the service audits the rest (a definition, a retried trigger
/// answered from the journal) through its sink, the same file. Every call is audited exactly
/// once, in call order, and metered as before.
#[tokio::test]
async fn a_sqlite_trail_audits_every_call_once() {
    use decision_gate_core::access::{InMemoryUsageMeter, JsonLinesAuditSink, UsageMetric};
    use decision_gate_core::sqlite::GroupCommit;

    let dir = tempfile::tempdir().unwrap();
    let trail_path = dir.path().join("audit.jsonl");
    let trail = Arc::new(JsonLinesAuditSink::open(&trail_path).unwrap());
    let store = Arc::new(
        SqliteStore::open_with_trail(
            dir.path().join("dg.db"),
            GroupCommit::default(),
            trail.clone(),
        )
        .await
        .unwrap(),
    );
    assert!(store.owns_audit() && !RunStore::owns_effects(store.as_ref()));
    let meter = Arc::new(InMemoryUsageMeter::default());
    let facts = facts();
    let gate = builder(&facts)
        .store(store.clone())
        .audit_sink(trail.clone())
        .usage_meter(meter.clone())
        .build();
    define(&gate, &scenario()).await;
    start(&gate, "s", "r").await;
    next(&gate, "s", "r", "t1", 1).await.expect("trigger");
    next(&gate, "s", "r", "t1", 1)
        .await
        .expect("a retry of the trigger");
    let actions: Vec<String> = std::fs::read_to_string(&trail_path)
        .unwrap()
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["outcome"]["result"], "success", "{record}");
            record["action"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        actions,
        [
            "scenario_define",
            "scenario_start",
            "scenario_next",
            "scenario_next"
        ]
    );
    assert_eq!(meter.total(ctx().tenant_id, UsageMetric::ToolCalls), 4);
}

/// The database, its WAL and the WAL's index are the owner's alone (0600), also when the
/// database file was left wider by something else.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_files_are_the_owners_alone() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("dg.db");
    let facts = facts();
    let (gate, store) = sqlite_gate(&db, &facts).await;
    define(&gate, &scenario()).await;
    start(&gate, "s", "r").await;
    for file in ["dg.db", "dg.db-wal", "dg.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    store.close().await;
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let reopened = SqliteStore::open(&db).await.unwrap();
    assert_eq!(mode(&db), 0o600, "narrowed when opened");
    reopened.close().await;
}
