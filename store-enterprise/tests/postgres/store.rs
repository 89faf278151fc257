//! What `PgStore` adds to the seam contracts: effects committed in the write's transaction,
//! provisioned namespaces, checksums, connection faults and the start-up refusals.

use std::time::Duration;

use decision_gate_core::access::{Action, AuditEvent, AuditOutcome, UsageEvent, UsageMetric};
use decision_gate_core::conformance::{head, run_key, scenario, trigger_entry};
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_core::store::{Effects, PutOutcome, RunStore, ScenarioStore, StoreError};
use decision_gate_store_enterprise::{PgError, PgStore, PoolConfig};

use crate::support::ScratchDb;

fn effects(tenant: u64, key: &str) -> Effects {
    let tenant_id = TenantId::new(tenant).expect("tenant");
    let namespace_id = NamespaceId::new(1).expect("ns");
    Effects {
        usage: vec![UsageEvent {
            tenant_id,
            namespace_id,
            metric: UsageMetric::ToolCalls,
            quantity: 1,
            idempotency_key: key.to_owned(),
        }],
        audit: vec![AuditEvent {
            principal: "tester".to_owned(),
            action: Action::ScenarioDefine,
            tenant_id,
            namespace_id,
            resource: format!("scenario/{key}"),
            outcome: AuditOutcome::Success,
            request_id: None,
            correlation_id: None,
            request_hash: None,
            credential: None,
        }],
    }
}

/// (usage rows, audit rows) of every tenant, read as the owner.
async fn effect_counts(db: &ScratchDb) -> (i64, i64) {
    let owner = db.owner_pool().await;
    let counts = sqlx::query_as(
        "SELECT (SELECT count(*) FROM usage_events), (SELECT count(*) FROM audit_events)",
    )
    .fetch_one(&owner)
    .await
    .expect("count effects");
    owner.close().await;
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_commit_with_the_write_and_only_with_it() {
    let db = ScratchDb::migrated().await;
    let store = db.app_store().await;
    assert!(ScenarioStore::owns_effects(&store));
    assert!(RunStore::owns_effects(&store));

    let record = scenario("s", 1, "1");
    let put = store.put(&record, &effects(1, "k1")).await;
    assert_eq!(put, Ok(PutOutcome::Created));
    assert_eq!(
        effect_counts(&db).await,
        (1, 1),
        "a write commits its effects"
    );

    // An identical put is an accepted call: its effects commit; a reused usage key counts once.
    let again = store.put(&record, &effects(1, "k1")).await;
    assert_eq!(again, Ok(PutOutcome::Unchanged));
    assert_eq!(effect_counts(&db).await, (1, 2), "usage key counted once");

    // A refused write commits none of its effects.
    let refused = store.put(&scenario("s", 1, "2"), &effects(1, "k2")).await;
    assert!(matches!(refused, Err(StoreError::AlreadyExists { .. })));
    assert_eq!(
        effect_counts(&db).await,
        (1, 2),
        "refused write has no effects"
    );

    // A run append that loses on revision commits neither the entry nor the effects.
    let key = run_key(1, 1, "r");
    store
        .create(
            &head(&key, 1),
            &trigger_entry(&key, 1, "t1"),
            &effects(1, "k3"),
        )
        .await
        .expect("create run");
    let conflict = store
        .append(
            2,
            head(&key, 3),
            trigger_entry(&key, 3, "t3"),
            &effects(1, "k5"),
        )
        .await;
    assert_eq!(
        conflict,
        Err(StoreError::RevisionConflict {
            expected: 2,
            actual: 1
        })
    );
    assert_eq!(
        effect_counts(&db).await,
        (2, 3),
        "only the create's effects"
    );

    // An effect naming another tenant is refused by row-level security; nothing commits.
    let foreign = store
        .append(
            1,
            head(&key, 2),
            trigger_entry(&key, 2, "t2"),
            &effects(2, "k6"),
        )
        .await;
    assert!(
        matches!(
            foreign,
            Err(StoreError::Invalid {
                field: "tenant_id",
                ..
            })
        ),
        "{foreign:?}"
    );
    assert_eq!(
        store.head(&key).await.expect("head").map(|h| h.revision),
        Some(1)
    );
    assert_eq!(effect_counts(&db).await, (2, 3));
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_provisioned_namespace() {
    let db = ScratchDb::migrated().await;
    let store = db.app_store().await;
    // Namespace 9 of tenant 1 was never created.
    let err = store.put(&scenario("s", 9, "1"), &Effects::default()).await;
    assert!(
        matches!(&err, Err(StoreError::Invalid { field: "namespace_id", message }) if message.contains("namespace 9")),
        "{err:?}"
    );
    let key = run_key(7, 1, "r");
    let err = store
        .create(
            &head(&key, 1),
            &trigger_entry(&key, 1, "t"),
            &Effects::default(),
        )
        .await;
    assert!(
        matches!(
            err,
            Err(StoreError::Invalid {
                field: "namespace_id",
                ..
            })
        ),
        "tenant 7 does not exist: {err:?}"
    );
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_document_is_refused_as_corrupt() {
    let db = ScratchDb::migrated().await;
    let store = db.app_store().await;
    let key = run_key(1, 1, "r");
    store
        .create(
            &head(&key, 1),
            &trigger_entry(&key, 1, "t"),
            &Effects::default(),
        )
        .await
        .expect("create");
    let owner = db.owner_pool().await;
    sqlx::query("UPDATE runs SET head_json = replace(head_json, '\"active\"', '\"completed\"')")
        .execute(&owner)
        .await
        .expect("tamper");
    owner.close().await;
    let read = store.head(&key).await;
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
    store.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable() {
    // Nothing listens on port 1; the pool is lazy, so the failure comes from the call.
    let pool = PoolConfig {
        acquire_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    }
    .lazy_pool("postgres://dg_app@127.0.0.1:1/none")
    .expect("url parses");
    let store = PgStore::from_pool(pool);
    assert!(matches!(
        store.ready().await,
        Err(StoreError::Unavailable(_))
    ));
    let read = store.head(&run_key(1, 1, "r")).await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let err = PgStore::connect("postgres://dg_app@127.0.0.1:1/none", &PoolConfig::default()).await;
    assert!(matches!(err, Err(PgError::Unavailable(_))), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_a_role_that_bypasses_row_level_security() {
    let db = ScratchDb::migrated().await;
    let err = PgStore::connect(&db.owner_url(), &PoolConfig::default()).await;
    assert!(
        matches!(&err, Err(PgError::UnsafeRole(m)) if m.contains("superuser")),
        "{err:?}"
    );
    db.drop_db().await;
}
