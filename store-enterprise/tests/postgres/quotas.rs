//! Plans, overrides and quotas at rest (migration 8): plans checked and bounded, a write over
//! its quota committing nothing, overrides replacing and lifting a plan's limit, a lowered limit
//! holding at once, a quota set mid-period counting the period's earlier usage, and the shares
//! spreading concurrent writers over their rows with caps that add up to the limit.

use decision_gate_core::access::{QuotaPeriod, UsageMeter, UsageMetric};
use decision_gate_core::conformance::usage_meter::usage;
use decision_gate_core::conformance::{head, run_key, trigger_entry};
use decision_gate_core::ids::TenantId;
use decision_gate_core::store::{Effects, RunStore, StoreError};
use decision_gate_store_enterprise::{
    MAX_PLANS, Override, PgError, PgPool, PgUsageMeter, Plan, PlanRates, QuotaLimit, Rate,
    assign_plan, delete_plan, list_plans, put_plan, set_override, tenant_usage,
};

use crate::support::ScratchDb;

fn tenant(n: u64) -> TenantId {
    TenantId::new(n).expect("tenant")
}

fn quota(metric: UsageMetric, period: QuotaPeriod, limit: u64) -> Plan {
    Plan {
        quotas: vec![QuotaLimit {
            metric,
            period,
            limit,
        }],
        ..Plan::default()
    }
}

async fn count(owner: &PgPool, query: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(query)
        .fetch_one(owner)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_checked_and_bounded() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    let invalid = |r: Result<(), PgError>, field: &str| {
        assert!(
            matches!(&r, Err(PgError::Invalid { field: f, .. }) if *f == field),
            "{field}: {r:?}"
        );
    };
    invalid(
        put_plan(&owner, "Not A Plan", &Plan::default()).await,
        "plan",
    );
    invalid(
        put_plan(&owner, &"p".repeat(64), &Plan::default()).await,
        "plan",
    );
    let twice = Plan {
        quotas: vec![
            QuotaLimit {
                metric: UsageMetric::ToolCalls,
                period: QuotaPeriod::Day,
                limit: 1,
            };
            2
        ],
        ..Plan::default()
    };
    invalid(put_plan(&owner, "twice", &twice).await, "quotas");
    let too_big = quota(UsageMetric::ToolCalls, QuotaPeriod::Day, u64::MAX);
    invalid(put_plan(&owner, "big", &too_big).await, "quotas.limit");
    for (credential, tenant_rate, field) in [
        (
            Some(Rate {
                per_second: 0,
                burst: 1,
            }),
            None,
            "rates.credential",
        ),
        (
            None,
            Some(Rate {
                per_second: 1,
                burst: 1_000_001,
            }),
            "rates.tenant",
        ),
    ] {
        let plan = Plan {
            rates: PlanRates {
                credential,
                tenant: tenant_rate,
            },
            ..Plan::default()
        };
        invalid(put_plan(&owner, "rates", &plan).await, field);
    }
    assert!(
        list_plans(&owner).await.expect("list").is_empty(),
        "nothing refused was saved"
    );

    // At most MAX_PLANS; replacing one at the bound is fine, one more is refused.
    for i in 0..MAX_PLANS {
        put_plan(&owner, &format!("p{i}"), &Plan::default())
            .await
            .expect("a plan within the bound");
    }
    put_plan(
        &owner,
        "p0",
        &quota(UsageMetric::RunsStarted, QuotaPeriod::Total, 5),
    )
    .await
    .expect("replacing a plan at the bound");
    let over = put_plan(&owner, "one-more", &Plan::default()).await;
    assert!(
        matches!(&over, Err(PgError::Conflict { id, .. }) if id.contains("256")),
        "{over:?}"
    );
    assert_eq!(list_plans(&owner).await.expect("list").len(), MAX_PLANS);

    // Assignments name what exists; a plan in use cannot go.
    assign_plan(&owner, tenant(1), Some("p0"))
        .await
        .expect("assign");
    assert!(matches!(
        assign_plan(&owner, tenant(1), Some("nope")).await,
        Err(PgError::MissingParent { what: "plan", .. })
    ));
    assert!(matches!(
        assign_plan(&owner, tenant(99), Some("p0")).await,
        Err(PgError::MissingParent { what: "tenant", .. })
    ));
    assert!(matches!(
        delete_plan(&owner, "p0").await,
        Err(PgError::Conflict { .. })
    ));
    assert!(matches!(
        delete_plan(&owner, "nope").await,
        Err(PgError::MissingParent { .. })
    ));
    delete_plan(&owner, "p1")
        .await
        .expect("an unused plan goes");
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_over_its_quota_commits_nothing() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    let store = db.app_store().await;
    put_plan(
        &owner,
        "one-run",
        &quota(UsageMetric::RunsStarted, QuotaPeriod::Total, 1),
    )
    .await
    .expect("plan");
    assign_plan(&owner, tenant(1), Some("one-run"))
        .await
        .expect("assign");
    let started = |key: &str| Effects {
        usage: vec![usage(1, UsageMetric::RunsStarted, 1, key)],
        audit: Vec::new(),
    };
    let first = run_key(1, 1, "first");
    store
        .create(
            &head(&first, 1),
            &trigger_entry(&first, 1, "t"),
            &started("k1"),
        )
        .await
        .expect("the first run fits");
    let second = run_key(1, 1, "second");
    let refused = store
        .create(
            &head(&second, 1),
            &trigger_entry(&second, 1, "t"),
            &started("k2"),
        )
        .await;
    let Err(StoreError::QuotaExceeded(refusal)) = refused else {
        panic!("the second run is over the quota: {refused:?}");
    };
    assert_eq!(
        (refusal.metric, refusal.period, refusal.limit, refusal.used),
        (UsageMetric::RunsStarted, QuotaPeriod::Total, 1, 1)
    );
    assert_eq!(
        (refusal.reset_at_ms, refusal.retry_after_ms),
        (None, None),
        "a total never resets"
    );
    assert_eq!(store.head(&second).await.expect("head"), None, "no run");
    assert_eq!(
        count(
            &owner,
            "SELECT count(*) FROM usage_events WHERE idempotency_key = 'k2'"
        )
        .await,
        0,
        "no event"
    );
    // The same call again (its key already counted) consumes nothing: a retry is accepted.
    let again = run_key(1, 1, "first-retried");
    store
        .create(
            &head(&again, 1),
            &trigger_entry(&again, 1, "t"),
            &started("k1"),
        )
        .await
        .expect("a retried call's key consumes nothing");
    // Tenant 2 is on no plan.
    let other = run_key(2, 1, "free");
    store
        .create(
            &head(&other, 1),
            &trigger_entry(&other, 1, "t"),
            &Effects {
                usage: vec![usage(2, UsageMetric::RunsStarted, 1, "k3")],
                audit: Vec::new(),
            },
        )
        .await
        .expect("no quota");
    store.close().await;
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_replace_and_lift_and_a_lowered_limit_holds_at_once() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    let app = db.app_store().await.pool().clone();
    let meter = PgUsageMeter::new(app.clone());
    // Usage before any quota: a quota set mid-period counts it.
    for i in 0..3 {
        meter
            .record(&[usage(1, UsageMetric::ToolCalls, 1, &format!("before-{i}"))])
            .await
            .expect("no quota yet");
    }
    put_plan(
        &owner,
        "five",
        &quota(UsageMetric::ToolCalls, QuotaPeriod::Day, 5),
    )
    .await
    .expect("plan");
    assign_plan(&owner, tenant(1), Some("five"))
        .await
        .expect("assign");
    let call = |key: String| {
        let meter = meter.clone();
        async move {
            meter
                .record(&[usage(1, UsageMetric::ToolCalls, 1, &key)])
                .await
        }
    };
    for i in 0..2 {
        call(format!("in-{i}")).await.expect("within the day's 5");
    }
    assert!(
        call("over".into()).await.is_err(),
        "3 earlier + 2 = 5: the sixth is refused"
    );
    let limited = |app: PgPool| async move {
        tenant_usage(&app, tenant(1))
            .await
            .expect("usage")
            .into_iter()
            .filter(|c| c.limit.is_some())
            .collect::<Vec<_>>()
    };
    let state = limited(app.clone()).await;
    assert_eq!(state.len(), 1);
    assert_eq!((state[0].limit, state[0].used), (Some(5), 5));
    assert!(state[0].reset_at_ms.is_some());

    // An override's limit must be storable, and names its field when it is not.
    assert!(matches!(
        set_override(
            &owner,
            tenant(1),
            UsageMetric::ToolCalls,
            QuotaPeriod::Day,
            Override::Limit(u64::MAX)
        )
        .await,
        Err(PgError::Invalid { field: "limit", .. })
    ));
    // An override replaces the plan's limit, then lifts it, then gives it back.
    set_override(
        &owner,
        tenant(1),
        UsageMetric::ToolCalls,
        QuotaPeriod::Day,
        Override::Limit(7),
    )
    .await
    .expect("override");
    call("raised-1".into()).await.expect("raised to 7");
    call("raised-2".into()).await.expect("raised to 7");
    assert!(call("raised-3".into()).await.is_err());
    set_override(
        &owner,
        tenant(1),
        UsageMetric::ToolCalls,
        QuotaPeriod::Day,
        Override::Unlimited,
    )
    .await
    .expect("lift");
    for i in 0..20 {
        call(format!("lifted-{i}")).await.expect("no limit");
    }
    assert!(limited(app.clone()).await.is_empty());
    set_override(
        &owner,
        tenant(1),
        UsageMetric::ToolCalls,
        QuotaPeriod::Day,
        Override::Clear,
    )
    .await
    .expect("clear");
    // Back on the plan's 5, far below what the day used: refused at once, saying so.
    let refused = call("lowered".into()).await;
    assert!(
        matches!(&refused, Err(decision_gate_core::access::UsageError::QuotaExceeded(r))
            if r.limit == 5 && r.used >= 7),
        "{refused:?}"
    );
    owner.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_spread_over_the_shares() {
    let db = ScratchDb::migrated().await;
    let owner = db.owner_pool().await;
    let app = db.app_store().await.pool().clone();
    put_plan(
        &owner,
        "big",
        &quota(UsageMetric::ToolCalls, QuotaPeriod::Month, 1_000_000),
    )
    .await
    .expect("plan");
    assign_plan(&owner, tenant(1), Some("big"))
        .await
        .expect("assign");
    let meter = PgUsageMeter::new(app);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let meter = meter.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    meter
                        .record(&[usage(1, UsageMetric::ToolCalls, 1, &format!("w{w}-{i}"))])
                        .await
                        .expect("within the quota");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(
        count(
            &owner,
            "SELECT sum(month_used)::bigint FROM quota_shards WHERE metric = 'tool_calls'"
        )
        .await,
        200,
        "every unit counted once"
    );
    assert!(
        count(
            &owner,
            "SELECT count(*) FROM quota_shards WHERE month_used > 0"
        )
        .await
            > 1,
        "the writers' connections used more than one share"
    );
    assert_eq!(
        count(
            &owner,
            "SELECT sum(month_cap)::bigint FROM quota_shards WHERE metric = 'tool_calls'"
        )
        .await,
        1_000_000,
        "the shares' caps add up to the limit"
    );
    owner.close().await;
    db.drop_db().await;
}
