//! Plans as the server applies them: the `RateLimit` suite on `PlanRateLimit` (in this process,
//! shared through the Redis at `DG_REDIS_URL` (127.0.0.1:6379 by default), and with its Redis unreachable), and the
//! `Authorizer` suite on `FeatureAuthorizer` (a plan without the gRPC API), on a real Postgres.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decision_gate_core::access::{
    AuthzError, RateError, RateLimit, RateScope, Resource, ScopeAuthorizer,
};
use decision_gate_core::conformance::rate_limit::caller;
use decision_gate_core::conformance::{AuthorizerFixture, AuthzRequest, RateFixture};
use decision_gate_core::{Action, TenantId};
use decision_gate_enterprise::TenancyAuthorizer;
use decision_gate_enterprise::plans::{FeatureAuthorizer, PlanCache};
use decision_gate_enterprise::rate_limit::{OnStateChange, PlanRateLimit, SharedSettings};
use decision_gate_mcp::metrics::Metrics;
use decision_gate_store_enterprise::{
    Feature, Plan, PlanRates, PoolConfig, Rate, assign_plan, put_plan,
};

use crate::authorizer::{Held, Scratch, agent};

/// The rates the suite is told: a credential's burst of 4, a tenant's of 10, 20 per second.
const RATES: PlanRates = PlanRates {
    credential: Some(Rate {
        per_second: 20,
        burst: 4,
    }),
    tenant: Some(Rate {
        per_second: 20,
        burst: 10,
    }),
};

static PREFIX: AtomicU32 = AtomicU32::new(0);

/// A key prefix no other test uses, so tests sharing the Redis never share a rate.
fn prefix() -> String {
    format!(
        "dg-test:{}:{}",
        std::process::id(),
        PREFIX.fetch_add(1, Ordering::Relaxed)
    )
}

/// The Redis the tests share (`scripts/redis.sh` exports it).
fn redis_url() -> String {
    std::env::var("DG_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn redis(url: &str) -> SharedSettings {
    SharedSettings {
        url: url.to_owned(),
        key_prefix: prefix(),
        timeout: Duration::from_millis(200),
    }
}

/// The state changes a limiter reported.
fn reports() -> (OnStateChange, Arc<Mutex<Vec<Option<String>>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let report: OnStateChange = Arc::new(move |lost: Option<&str>| {
        log.lock().unwrap().push(lost.map(str::to_owned));
    });
    (report, seen)
}

/// A limiter with the suite's rates as the deployment's defaults (the scratch tenants are on no
/// plan), and the scratch database it reads plans from.
struct Limiter {
    limiter: PlanRateLimit,
    _db: Scratch,
}

#[async_trait::async_trait]
impl RateLimit for Limiter {
    async fn admit(
        &self,
        ctx: &decision_gate_core::RequestContext,
    ) -> Result<(), decision_gate_core::access::RateError> {
        self.limiter.admit(ctx).await
    }
}

async fn limiter(shared: Option<SharedSettings>) -> Limiter {
    let (db, owner) = Scratch::create().await;
    let (report, _) = reports();
    Limiter {
        limiter: PlanRateLimit::new(
            Arc::new(PlanCache::new(owner)),
            RATES,
            shared,
            Metrics::new(),
            report,
        )
        .expect("limiter"),
        _db: db,
    }
}

fn fixture_of(limiter: Limiter, degraded: Option<Limiter>) -> RateFixture {
    RateFixture {
        limiter: Arc::new(limiter),
        credential_burst: 4,
        tenant_burst: 10,
        degraded: degraded.map(|d| Arc::new(d) as Arc<dyn RateLimit>),
    }
}

mod local {
    use super::*;

    async fn fixture() -> RateFixture {
        fixture_of(limiter(None).await, None)
    }

    decision_gate_core::rate_limit_conformance!(fixture);
}

mod shared {
    use super::*;

    async fn fixture() -> RateFixture {
        fixture_of(
            limiter(Some(redis(&redis_url()))).await,
            // Nothing listens on port 1: every decision falls back to the local limiter.
            Some(limiter(Some(redis("redis://127.0.0.1:1"))).await),
        )
    }

    decision_gate_core::rate_limit_conformance!(fixture);
}

/// Two limiters sharing one Redis share each credential's rate, as two replicas do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_share_a_rate() {
    let settings = redis(&redis_url());
    let one = limiter(Some(settings.clone())).await;
    let two = limiter(Some(settings)).await;
    let ctx = caller("shared", 1);
    let mut admitted = 0;
    for i in 0..12 {
        let replica = if i % 2 == 0 { &one } else { &two };
        if replica.admit(&ctx).await.is_ok() {
            admitted += 1;
        }
    }
    // A burst of 4 (one more may refill at 20/s while the loop runs), not 4 per replica.
    assert!(
        (4..=5).contains(&admitted),
        "two replicas admitted {admitted} calls of one credential"
    );
}

/// With Redis unreachable the limiter limits locally, counts each such decision and reports the
/// loss once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_falls_back_to_the_local_limiter_reported_once() {
    let (db, owner) = Scratch::create().await;
    let (report, seen) = reports();
    let metrics = Metrics::new();
    let limiter = PlanRateLimit::new(
        Arc::new(PlanCache::new(owner)),
        RATES,
        Some(redis("redis://127.0.0.1:1")),
        metrics.clone(),
        report,
    )
    .expect("limiter");
    let ctx = caller("alone", 1);
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(limiter.admit(&ctx).await);
    }
    assert_eq!(
        answers.iter().filter(|a| a.is_ok()).count(),
        4,
        "the local limiter applies the credential's burst: {answers:?}"
    );
    assert!(matches!(
        answers.last(),
        Some(Err(RateError::Limited {
            scope: RateScope::Credential,
            ..
        }))
    ));
    let reported = seen.lock().unwrap().clone();
    assert_eq!(reported.len(), 1, "one report per change: {reported:?}");
    assert!(reported[0].as_deref().is_some_and(|r| !r.is_empty()));
    // Each admitted call decided its credential's and its tenant's rate, each refused one only
    // its credential's: 4 × 2 + 2.
    let text = metrics.render();
    assert!(
        text.contains(r#"decision_gate_fallbacks_total{component="rate_limit_redis"} 10"#),
        "every fallback decision is counted: {text}"
    );
    drop(db);
}

/// A plan's own rates replace the defaults, from the next call on once the cache forgets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_sets_its_tenants_rates() {
    let (db, owner) = Scratch::create().await;
    let plans = Arc::new(PlanCache::new(owner.clone()));
    let (report, _) = reports();
    let limiter =
        PlanRateLimit::new(plans.clone(), RATES, None, Metrics::new(), report).expect("limiter");
    let strict = Plan {
        rates: PlanRates {
            credential: Some(Rate {
                per_second: 1,
                burst: 1,
            }),
            tenant: None,
        },
        ..Plan::default()
    };
    put_plan(&owner, "strict", &strict).await.expect("plan");
    assign_plan(&owner, TenantId::new(1).unwrap(), Some("strict"))
        .await
        .expect("assign");
    plans.forget();
    let ctx = caller("planned", 1);
    limiter.admit(&ctx).await.expect("the first call");
    assert!(
        matches!(
            limiter.admit(&ctx).await,
            Err(RateError::Limited { retry_after_ms, .. }) if retry_after_ms > 500
        ),
        "the plan's burst of 1 at 1/s"
    );
    // Tenant 2 is on no plan: the defaults.
    for _ in 0..4 {
        limiter
            .admit(&caller("planned", 2))
            .await
            .expect("default burst");
    }
    drop(db);
}

// ---- features ----------------------------------------------------------------------------------

async fn feature_fixture() -> AuthorizerFixture {
    let (db, owner) = Scratch::create().await;
    // Tenant 1 is on a plan without the gRPC API.
    let plan = Plan {
        features: [Feature::S3Export].into(),
        ..Plan::default()
    };
    put_plan(&owner, "no-grpc", &plan).await.expect("plan");
    assign_plan(&owner, TenantId::new(1).unwrap(), Some("no-grpc"))
        .await
        .expect("assign");
    let features = |pool: decision_gate_store_enterprise::PgPool| {
        FeatureAuthorizer::new(
            Arc::new(TenancyAuthorizer::new(
                Arc::new(ScopeAuthorizer),
                pool.clone(),
            )),
            Arc::new(PlanCache::new(pool)),
        )
    };
    let unreachable = PoolConfig {
        acquire_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    }
    .lazy_pool("postgres://postgres@127.0.0.1:1/none")
    .expect("a lazy pool");
    let run = Resource::new("run", "r");
    let ask = |t, ns, anywhere, transport, action| {
        let mut ctx = agent(t, ns, anywhere);
        ctx.transport = transport;
        AuthzRequest::new(ctx, action, run.clone())
    };
    AuthorizerFixture {
        authorizer: Arc::new(Held {
            authorizer: Arc::new(features(owner)),
            _db: db,
        }),
        allowed: vec![
            ask(1, 1, false, "http", Action::ScenarioNext),
            ask(1, 1, true, "stdio", Action::ScenarioStatus),
        ],
        out_of_scope: vec![
            // Another tenant than the principal's, over gRPC: hidden before the plan is read.
            ask(2, 1, false, "grpc", Action::ScenarioNext),
            ask(3, 1, true, "grpc", Action::ScenarioNext),
        ],
        denied: vec![
            // The plan leaves out the gRPC API.
            ask(1, 1, false, "grpc", Action::ScenarioNext),
            // Not the agent's permission, whatever the transport.
            ask(1, 1, false, "http", Action::ScenarioDefine),
        ],
        undecidable: Some(Arc::new(features(unreachable))),
    }
}

mod features {
    use super::*;

    decision_gate_core::authorizer_conformance!(feature_fixture);
}

/// The refusal names the feature and the plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_feature_is_denied_with_its_reason() {
    let fixture = feature_fixture().await;
    let request = &fixture.denied[0];
    let answer = fixture
        .authorizer
        .authorize(&request.ctx, request.action, &request.resource)
        .await;
    assert!(
        matches!(&answer, Err(AuthzError::Denied(reason))
            if reason.contains("feature_disabled") && reason.contains("grpc")
                && reason.contains("no-grpc")),
        "{answer:?}"
    );
}
