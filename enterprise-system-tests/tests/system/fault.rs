//! Postgres crashes mid-load: calls fail `unavailable` (retryable) and `/readyz` turns false
//! while it is down; service resumes by itself when it returns; every acknowledged trigger is in
//! the journal and no run is left at a torn revision.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cluster::Cluster;
use crate::isolation::{TOKEN_A, auth};
use crate::support::{
    ConfigDir, Enterprise, ScratchDb, call, config, cycle, error_kind, migrate_and_provision,
    next_args, ok, run, start_args,
};

const WORKERS: usize = 4;
const UP: u8 = 0;
const DOWN: u8 = 1;
/// Set just before the restart begins, so an answer read as `DOWN` came before it.
const RESTARTING: u8 = 2;
const BACK: u8 = 3;

/// One call's outcome: the phase it was sent and answered in, the trigger, and the error kind
/// and retryability when it failed.
#[derive(Debug, Clone)]
struct Outcome {
    sent: u8,
    answered: u8,
    trigger: String,
    error: Option<(String, bool)>,
}

/// Waits until `done` holds, failing with `what` after two minutes (a deadline against a hung
/// test, not a timing assertion).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_postgres_crash_mid_load_loses_no_acknowledged_trigger_and_service_resumes() {
    let cluster = Cluster::start();
    let db = ScratchDb::create(&cluster.server());
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    let server = Enterprise::start(&dir);
    assert_eq!(server.readyz(), 200);
    ok(&server.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
    for w in 0..WORKERS {
        ok(&server.call(
            Some(TOKEN_A),
            "scenario_start",
            start_args(1, &format!("w{w}")),
        ));
    }

    let phase = Arc::new(AtomicU8::new(UP));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<Vec<Outcome>>>> = Arc::new(Mutex::new(vec![Vec::new(); WORKERS]));
    let url = server.url("/mcp");
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (phase, stop, acked, outcomes, url) = (
                phase.clone(),
                stop.clone(),
                acked.clone(),
                outcomes.clone(),
                url.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Acquire) {
                    n += 1;
                    let trigger = format!("t-{n}");
                    let sent = phase.load(Ordering::Acquire);
                    let result = call(
                        &url,
                        Some(TOKEN_A),
                        "scenario_next",
                        next_args(1, &format!("w{w}"), &trigger, n),
                    );
                    let answered = phase.load(Ordering::Acquire);
                    let error = error_kind(&result).map(|kind| {
                        let retryable =
                            result["structuredContent"]["error"]["retryable"] == json!(true);
                        (kind, retryable)
                    });
                    if error.is_none() {
                        acked.fetch_add(1, Ordering::AcqRel);
                    }
                    outcomes.lock().expect("outcomes")[w].push(Outcome {
                        sent,
                        answered,
                        trigger,
                        error,
                    });
                }
            })
        })
        .collect();

    let count = |pred: &dyn Fn(&Outcome) -> bool| -> Vec<usize> {
        outcomes
            .lock()
            .expect("outcomes")
            .iter()
            .map(|o| o.iter().filter(|x| pred(x)).count())
            .collect()
    };
    wait_for("40 acknowledged triggers before the crash", || {
        acked.load(Ordering::Acquire) >= 40
    });
    cluster.crash();
    phase.store(DOWN, Ordering::Release);
    wait_for(
        "every worker to see a failure while Postgres is down",
        || {
            count(&|o| o.sent == DOWN && o.error.is_some())
                .iter()
                .all(|&c| c >= 2)
        },
    );
    let (status, body) = server.readyz_answer();
    assert_eq!(status, 503, "readiness while Postgres is down");
    // A stable code, not the driver's text (which names the host, port and user).
    assert_eq!(
        body,
        serde_json::json!({"status": "not_ready", "reason": "unavailable"})
    );

    phase.store(RESTARTING, Ordering::Release);
    cluster.pg_ctl_start();
    phase.store(BACK, Ordering::Release);
    wait_for("readiness after Postgres returned", || {
        server.readyz() == 200
    });
    wait_for("every worker to be acknowledged again", || {
        count(&|o| o.sent == BACK && o.error.is_none())
            .iter()
            .all(|&c| c >= 3)
    });
    stop.store(true, Ordering::Release);
    for w in workers {
        w.join().expect("worker");
    }

    let outcomes = outcomes.lock().expect("outcomes").clone();
    for (w, list) in outcomes.iter().enumerate() {
        // Every failure is `unavailable` and retryable; while Postgres was down, every call
        // failed.
        for o in list {
            if let Some((kind, retryable)) = &o.error {
                assert!(
                    kind == "unavailable" && *retryable,
                    "worker {w}: {o:?} failed otherwise"
                );
            }
        }
        // Every acknowledged trigger is in the journal.
        let journal = db.strings(&format!(
            "SELECT trigger_id FROM run_entries WHERE tenant_id = 1 AND namespace_id = 1
              AND run_id = 'w{w}' AND trigger_id IS NOT NULL"
        ));
        // Sent after the crash and answered before the restart began: it must have failed.
        for o in list {
            if o.sent == DOWN && o.answered == DOWN {
                assert!(
                    o.error.is_some(),
                    "worker {w}: {o:?} succeeded while down (in the journal: {})",
                    journal.contains(&o.trigger)
                );
            }
        }
        for o in list.iter().filter(|o| o.error.is_none()) {
            assert!(
                journal.contains(&o.trigger),
                "worker {w}: acknowledged {} is not in the journal",
                o.trigger
            );
        }
    }
    // No torn revision: each head's revision is its number of entries, 1..=revision.
    let torn = db.strings(
        "SELECT r.run_id FROM runs r
          WHERE r.revision <> (SELECT count(*) FROM run_entries e
                                WHERE e.tenant_id = r.tenant_id AND e.namespace_id = r.namespace_id
                                  AND e.run_id = r.run_id)",
    );
    assert!(torn.is_empty(), "runs at a torn revision: {torn:?}");
    let file = dir.file();
    let out = run(&["integrity-scan", "--config", file.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "integrity scan after the crash: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(server);
}
