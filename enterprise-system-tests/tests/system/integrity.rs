//! `integrity-scan`: clean after real traffic, and it names a cross-tenant row a superuser
//! planted.

use serde_json::json;

use crate::isolation::{TOKEN_A, auth};
use crate::support::{
    ConfigDir, Enterprise, PgServer, ScratchDb, config, cycle, migrate_and_provision, next_args,
    ok, run, run_json, start_args,
};

#[test]
fn the_scan_is_clean_after_traffic_and_finds_a_planted_cross_tenant_row() {
    let pg = PgServer::shared();
    let db = ScratchDb::create(&pg);
    let dir = ConfigDir::new(&config(&db, "", &auth()));
    migrate_and_provision(&dir);
    {
        let server = Enterprise::start(&dir);
        ok(&server.call(Some(TOKEN_A), "scenario_define", json!({ "spec": cycle() })));
        ok(&server.call(Some(TOKEN_A), "scenario_start", start_args(1, "run-1")));
        for n in 1..=3 {
            ok(&server.call(
                Some(TOKEN_A),
                "scenario_next",
                next_args(1, "run-1", &format!("t-{n}"), n),
            ));
        }
    }
    let file = dir.file();
    let file = file.to_str().expect("path");

    let out = run(&["integrity-scan", "--config", file]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("integrity scan: clean"));

    // Tenant 2 gets a journal entry of tenant 1's run, which tenant 2 does not have. The
    // composite foreign key forbids it, so the superuser switches the checks off for the
    // session first (as a restore tool, or an attacker with superuser, could).
    db.exec(&[
        "SET session_replication_role = replica",
        "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, entry_json, doc_sha256)
         SELECT 2, namespace_id, run_id, revision, entry_json, doc_sha256 FROM run_entries
          WHERE tenant_id = 1 AND run_id = 'run-1' AND revision = 2",
    ]);
    let (code, doc) = run_json(&["integrity-scan", "--config", file, "--json"]);
    assert_eq!(code, Some(1), "{doc}");
    assert_eq!(doc["status"], "findings");
    let findings = doc["findings"].as_array().expect("findings");
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "cross_tenant_reference"
                && f["table"] == "run_entries"
                && f["key"] == "2/1/run-1/2"),
        "{doc}"
    );
    // The text form names it too; the URL comes from DATABASE_URL as well as the config.
    let out = std::process::Command::new(crate::support::binary())
        .args(["integrity-scan"])
        .env("DATABASE_URL", db.owner_url())
        .env_remove("DECISION_GATE_ENTERPRISE_CONFIG")
        .output()
        .expect("run integrity-scan");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cross_tenant_reference: run_entries 2/1/run-1/2"),
        "{text}"
    );
}
