//! Migrations: concurrent starts apply each migration once, dry runs change nothing, and the
//! schema check refuses a schema this binary does not know.

use decision_gate_store_enterprise::{
    MigrateOptions, PgError, PgStore, PoolConfig, check_schema, known_migrations, migrate,
};

use crate::support::{APP_ROLE, ScratchDb};

fn options(dry_run: bool) -> MigrateOptions {
    MigrateOptions {
        dry_run,
        app_role: Some(APP_ROLE.to_owned()),
    }
}

fn known_versions() -> Vec<i64> {
    known_migrations().iter().map(|m| m.version).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_migrations_apply_each_version_once() {
    let db = ScratchDb::empty().await;
    let url = db.owner_url();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { migrate(&url, &options(false)).await })
        })
        .collect();
    let mut applied = Vec::new();
    for task in tasks {
        let report = task.await.expect("task").expect("every migrate succeeds");
        assert!(report.pending.is_empty(), "{report:?}");
        applied.extend(report.applied.iter().map(|m| m.version));
    }
    applied.sort_unstable();
    assert_eq!(
        applied,
        known_versions(),
        "each migration applied by exactly one task"
    );

    let owner = db.owner_pool().await;
    let rows: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&owner)
            .await
            .expect("migration rows");
    assert_eq!(
        rows,
        known_versions()
            .into_iter()
            .map(|v| (v, true))
            .collect::<Vec<_>>()
    );
    owner.close().await;
    // The granted application role can serve it.
    let store = db.app_store().await;
    check_schema(store.pool()).await.expect("schema matches");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_and_changes_nothing() {
    let db = ScratchDb::empty().await;
    let report = migrate(&db.owner_url(), &options(true))
        .await
        .expect("dry run");
    assert!(report.dry_run);
    assert!(report.applied.is_empty() && report.already_applied.is_empty());
    assert_eq!(report.pending, known_migrations());
    let owner = db.owner_pool().await;
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&owner)
        .await
        .expect("query");
    assert!(!exists, "a dry run creates nothing");
    let behind = check_schema(&owner).await;
    assert!(
        matches!(&behind, Err(PgError::SchemaBehind(m)) if m.contains("1, 2")),
        "{behind:?}"
    );

    let real = migrate(&db.owner_url(), &options(false))
        .await
        .expect("migrate");
    assert_eq!(real.applied, known_migrations());
    let again = migrate(&db.owner_url(), &options(true))
        .await
        .expect("dry run");
    assert!(again.pending.is_empty());
    assert_eq!(again.already_applied, known_migrations());
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused_by_name() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    check_schema(&owner)
        .await
        .expect("a matching schema passes");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    )
    .execute(&owner)
    .await
    .expect("plant a newer migration");
    let err = check_schema(&owner).await;
    assert!(
        matches!(&err, Err(PgError::UnknownSchema(m)) if m.contains("9999")),
        "{err:?}"
    );
    let err = PgStore::connect(&db.app_url(), &PoolConfig::default()).await;
    assert!(
        matches!(&err, Err(PgError::UnknownSchema(m)) if m.contains("9999")),
        "the store refuses to serve: {err:?}"
    );
    let err = migrate(&db.owner_url(), &options(false)).await;
    assert!(
        matches!(&err, Err(PgError::UnknownSchema(m)) if m.contains("9999")),
        "migrate refuses too: {err:?}"
    );
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_is_refused_by_name() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
        .execute(&owner)
        .await
        .expect("change a checksum");
    let err = check_schema(&owner).await;
    assert!(
        matches!(&err, Err(PgError::UnknownSchema(m)) if m.contains("version(s) 2 ")),
        "{err:?}"
    );
    owner.close().await;
    db.drop_db().await;
}
