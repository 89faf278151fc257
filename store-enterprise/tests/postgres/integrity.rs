//! The integrity scan: nothing on a clean database; a cross-tenant row, an orphan, a journal
//! gap and a NULL tenant planted by a superuser are each found.

use std::collections::BTreeSet;

use decision_gate_core::conformance::{head, run_key, scenario, trigger_entry};
use decision_gate_core::ids::TenantId;
use decision_gate_core::store::{Effects, RunStore, ScenarioStore};
use decision_gate_store_enterprise::{Finding, FindingKind, PgError, PgPool, integrity_scan};

use crate::support::ScratchDb;

/// Tenants 1 and 2: scenario `s` in namespace 1, and run `r-<t>` at revision 3.
async fn clean(db: &ScratchDb) {
    let store = db.app_store().await;
    for t in [1, 2] {
        let mut s = scenario("s", 1, "1");
        s.tenant_id = TenantId::new(t).expect("tenant");
        store.put(&s, &Effects::default()).await.expect("put");
        let key = run_key(t, 1, &format!("r-{t}"));
        store
            .create(
                &head(&key, 1),
                &trigger_entry(&key, 1, "t1"),
                &Effects::default(),
            )
            .await
            .expect("create");
        for rev in 2..=3 {
            store
                .append(
                    rev - 1,
                    head(&key, rev),
                    trigger_entry(&key, rev, &format!("t{rev}")),
                    &Effects::default(),
                )
                .await
                .expect("append");
        }
    }
    store.close().await;
}

/// Runs `statements` as the superuser with foreign keys (and every trigger) switched off.
async fn plant(owner: &PgPool, statements: &[&str]) {
    let mut tx = owner.begin().await.expect("begin");
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .expect("replica mode");
    for s in statements {
        sqlx::query(s)
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    tx.commit().await.expect("commit");
}

fn summary(findings: &[Finding]) -> BTreeSet<(FindingKind, String, String)> {
    findings
        .iter()
        .map(|f| (f.kind, f.table.clone(), f.key.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_database_has_no_findings() {
    let db = ScratchDb::migrated().await;
    clean(&db).await;
    let owner = db.owner_pool().await;
    assert_eq!(integrity_scan(&owner).await.expect("scan"), Vec::new());
    owner.close().await;

    // The application role cannot see every tenant, so it may not run the scan.
    let app = PgPool::connect(&db.app_url()).await.expect("app pool");
    let err = integrity_scan(&app).await;
    assert!(
        matches!(err, Err(PgError::Invalid { field: "role", .. })),
        "{err:?}"
    );
    app.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_damage_is_found() {
    let db = ScratchDb::migrated().await;
    clean(&db).await;
    let owner = db.owner_pool().await;
    plant(
        &owner,
        &[
            // Tenant 3 gets an entry of tenant 1's run (which tenant 3 does not have).
            "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, entry_json, doc_sha256)
             SELECT 3, namespace_id, run_id, 4, entry_json, doc_sha256 FROM run_entries
              WHERE tenant_id = 1 AND run_id = 'r-1' AND revision = 1",
            // An entry of a run that exists nowhere.
            "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, entry_json, doc_sha256)
             VALUES (2, 1, 'ghost', 1, '{}', 'x')",
            // A hole in tenant 2's journal.
            "DELETE FROM run_entries WHERE tenant_id = 2 AND run_id = 'r-2' AND revision = 2",
            // Tenant 1's run head moved into tenant 2 under a new id: its document still says 1.
            "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, revision, head_json, doc_sha256)
             SELECT 2, namespace_id, 'moved', scenario_id, 1, head_json, doc_sha256 FROM runs
              WHERE tenant_id = 1 AND run_id = 'r-1'",
            "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, entry_json, doc_sha256)
             VALUES (2, 1, 'moved', 1, '{}', 'x')",
        ],
    )
    .await;
    let findings = integrity_scan(&owner).await.expect("scan");
    let expected: BTreeSet<_> = [
        (
            FindingKind::CrossTenantReference,
            "run_entries",
            "3/1/r-1/4",
        ),
        (FindingKind::OrphanedRow, "run_entries", "2/1/ghost/1"),
        (FindingKind::JournalGap, "run_entries", "2/1/r-2"),
        (FindingKind::CrossTenantReference, "runs", "2/1/moved"),
    ]
    .into_iter()
    .map(|(k, t, key)| (k, t.to_owned(), key.to_owned()))
    .collect();
    assert_eq!(summary(&findings), expected, "{findings:#?}");
    let cross = findings
        .iter()
        .find(|f| f.table == "run_entries" && f.kind == FindingKind::CrossTenantReference)
        .expect("cross-tenant finding");
    assert!(cross.detail.contains("tenant(s) 1"), "{}", cross.detail);
    let json = serde_json::to_value(&findings).expect("findings serialise");
    assert!(json.to_string().contains("\"journal_gap\""), "{json}");
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nullable_tenant_column_and_its_null_rows_are_found() {
    let db = ScratchDb::migrated().await;
    clean(&db).await;
    let owner = db.owner_pool().await;
    plant(
        &owner,
        &[
            "ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey",
            "ALTER TABLE audit_events ALTER COLUMN tenant_id DROP NOT NULL",
            "INSERT INTO audit_events (tenant_id, namespace_id, event_json, doc_sha256)
             VALUES (NULL, 1, '{}', 'x')",
        ],
    )
    .await;
    let findings = integrity_scan(&owner).await.expect("scan");
    let nulls: Vec<&str> = findings
        .iter()
        .filter(|f| f.kind == FindingKind::NullTenantId && f.table == "audit_events")
        .map(|f| f.detail.as_str())
        .collect();
    assert_eq!(
        nulls,
        ["column tenant_id allows NULL", "1 row(s) have no tenant_id"],
        "{findings:#?}"
    );
    owner.close().await;
    db.drop_db().await;
}
