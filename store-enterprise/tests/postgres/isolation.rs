//! Isolation in the database: what the application role can see and write with no tenant set,
//! with the wrong tenant set, and what it cannot switch off.

use decision_gate_core::conformance::{head, run_key, scenario, trigger_entry};
use decision_gate_core::ids::TenantId;
use decision_gate_core::store::{Effects, RunStore, ScenarioStore, SchemaRegistry};
use decision_gate_store_enterprise::{
    PgError, check_app_role, tables_without_forced_rls, tenant_tables,
};
use sqlx::{Connection, Executor, PgConnection};

use crate::support::ScratchDb;

/// Every tenant table this schema must have.
const EXPECTED: &[&str] = &[
    "audit_events",
    "data_shapes",
    "namespaces",
    "quota_overrides",
    "quota_shards",
    "run_entries",
    "runs",
    "scenarios",
    "tenants",
    "usage_events",
];

/// Tenants 1 and 2 each with a scenario, a run (`run-of-<t>`) and a data shape.
async fn two_tenants(db: &ScratchDb) {
    let store = db.app_store().await;
    for t in [1, 2] {
        let mut s = scenario("s", 1, "1");
        s.tenant_id = TenantId::new(t).expect("tenant");
        store.put(&s, &Effects::default()).await.expect("put");
        let key = run_key(t, 1, &format!("run-of-{t}"));
        store
            .create(
                &head(&key, 1),
                &trigger_entry(&key, 1, "t"),
                &Effects::default(),
            )
            .await
            .expect("create");
        store
            .register(
                &decision_gate_core::conformance::schema_registry::shape(t, 1, "d", "v1"),
                &Effects::default(),
            )
            .await
            .expect("register");
    }
    store.close().await;
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql)
        .fetch_one(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    n
}

fn sqlstate(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()).unwrap_or_default(),
        other => panic!("not a database error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_sees_only_the_tenant_it_set() {
    let db = ScratchDb::migrated().await;
    two_tenants(&db).await;
    let owner = db.owner_pool().await;
    let tables = tenant_tables(&owner).await.expect("tenant tables");
    assert_eq!(tables, EXPECTED, "the schema's tenant tables");

    let mut app = db.app_conn().await;
    // The owner sees rows in every table it seeded; the app role, without a tenant, none.
    for table in [
        "tenants",
        "namespaces",
        "scenarios",
        "runs",
        "run_entries",
        "data_shapes",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        let (all,): (i64,) = sqlx::query_as(&sql).fetch_one(&owner).await.expect("owner");
        assert!(all > 0, "{table} has rows to hide");
    }
    for table in &tables {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&mut app, &sql).await, 0, "{table} without a tenant");
    }

    // With tenant 1 set, tenant 1's rows are there and tenant 2's are not.
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('app.tenant_id', '1', true)")
        .await
        .expect("set tenant");
    assert_eq!(count(&mut tx, "SELECT count(*) FROM runs").await, 1);
    for table in &tables {
        let sql = format!("SELECT count(*) FROM {table} WHERE tenant_id <> 1");
        assert_eq!(
            count(&mut tx, &sql).await,
            0,
            "{table}: other tenants' rows"
        );
    }
    let updated = sqlx::query("UPDATE runs SET revision = revision WHERE tenant_id = 2")
        .execute(&mut *tx)
        .await
        .expect("update");
    assert_eq!(
        updated.rows_affected(),
        0,
        "another tenant's run cannot be updated"
    );
    tx.commit().await.expect("commit");

    // After a transaction-local tenant ends, the connection sees nothing again.
    for table in &tables {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(
            count(&mut app, &sql).await,
            0,
            "{table} after the transaction"
        );
    }
    app.close().await.expect("close");
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_write_across_tenants() {
    let db = ScratchDb::migrated().await;
    two_tenants(&db).await;
    let mut app = db.app_conn().await;

    // A row for tenant 2 while tenant 1 is set: refused by the policy's WITH CHECK.
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('app.tenant_id', '1', true)")
        .await
        .expect("set tenant");
    let err = tx
        .execute(
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_hash, spec_json, doc_sha256)
             VALUES (2, 1, 'planted', '{}', '{}', 'x')",
        )
        .await
        .expect_err("a tenant-2 row under tenant 1");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    tx.rollback().await.expect("rollback");

    // A tenant-1 row pointing at tenant 2's run: refused by the composite foreign key.
    let mut tx = app.begin().await.expect("begin");
    tx.execute("SELECT set_config('app.tenant_id', '1', true)")
        .await
        .expect("set tenant");
    let err = tx
        .execute(
            "INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, entry_json, doc_sha256)
             VALUES (1, 1, 'run-of-2', 2, '{}', 'x')",
        )
        .await
        .expect_err("a reference to tenant 2's run");
    assert_eq!(sqlstate(&err), "23503", "{err}");
    tx.rollback().await.expect("rollback");

    // With no tenant at all, nothing can be inserted.
    let err = app
        .execute(
            "INSERT INTO scenarios (tenant_id, namespace_id, scenario_id, spec_hash, spec_json, doc_sha256)
             VALUES (1, 1, 'planted', '{}', '{}', 'x')",
        )
        .await
        .expect_err("an insert without a tenant");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    app.close().await.expect("close");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_role_cannot_switch_row_level_security_off() {
    let db = ScratchDb::migrated().await;
    two_tenants(&db).await;
    let mut app = db.app_conn().await;
    for statement in [
        "ALTER TABLE runs DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE runs NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON runs",
        "CREATE POLICY everything ON runs USING (true)",
        "ALTER ROLE dg_app BYPASSRLS",
        "SET ROLE postgres",
    ] {
        let err = app.execute(statement).await.expect_err(statement);
        assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
    }
    // row_security = off makes a query that a policy would filter an error, never a bypass.
    app.execute("SET row_security = off").await.expect("set");
    let err = app
        .execute("SELECT count(*) FROM runs")
        .await
        .expect_err("row_security off");
    assert_eq!(sqlstate(&err), "42501", "{err}");
    app.close().await.expect("close");

    let pool = decision_gate_store_enterprise::PgPool::connect(&db.app_url())
        .await
        .expect("app pool");
    check_app_role(&pool).await.expect("dg_app is a safe role");
    pool.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_table_has_forced_row_level_security() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    let tables = tenant_tables(&owner).await.expect("tenant tables");
    assert!(tables.len() >= EXPECTED.len(), "{tables:?}");
    assert_eq!(
        tables_without_forced_rls(&owner).await.expect("check"),
        Vec::<String>::new(),
        "tenant tables without ENABLE + FORCE ROW LEVEL SECURITY"
    );

    // The check catches a table that loses either flag.
    sqlx::query("ALTER TABLE scenarios NO FORCE ROW LEVEL SECURITY")
        .execute(&owner)
        .await
        .expect("alter");
    sqlx::query("ALTER TABLE runs DISABLE ROW LEVEL SECURITY")
        .execute(&owner)
        .await
        .expect("alter");
    assert_eq!(
        tables_without_forced_rls(&owner).await.expect("check"),
        vec!["runs".to_owned(), "scenarios".to_owned()]
    );
    let err = check_app_role(&owner).await;
    assert!(matches!(err, Err(PgError::UnsafeRole(_))), "{err:?}");
    owner.close().await;
    db.drop_db().await;
}
