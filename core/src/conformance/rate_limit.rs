//! [`RateLimit`] contract checks.
//!
//! The rates are the implementation's configuration, so the factory states them in a
//! [`RateFixture`]: how many calls one credential and one tenant may make at once (their
//! bursts), with a sustained rate fast enough that a refusal's `retry_after_ms` is short (the
//! suite waits it out) and slow enough that a burst is not refilled while the suite spends it
//! (10 to 50 calls per second suits both).

use std::sync::Arc;
use std::time::Duration;

use super::{namespace, tenant};
use crate::access::{RateError, RateLimit, RateScope, RequestContext};
use crate::identity::Principal;

/// A limiter and the rates it applies.
pub struct RateFixture {
    /// The limiter under test, with nothing counted yet.
    pub limiter: Arc<dyn RateLimit>,
    /// Calls one credential may make at once.
    pub credential_burst: u32,
    /// Calls one tenant's credentials together may make at once; more than
    /// `credential_burst`.
    pub tenant_burst: u32,
    /// The same limiter with its shared state unreachable (its Redis down), if it has any:
    /// clause 4 checks it still limits. `None` for a limiter without shared state.
    pub degraded: Option<Arc<dyn RateLimit>>,
}

/// A call of credential `name` in tenant `t`.
#[must_use]
pub fn caller(name: &str, t: u64) -> RequestContext {
    let mut principal = Principal::local();
    principal.subject = name.to_owned();
    principal.issuer = Some("conformance".to_owned());
    principal.credential_id = Some(name.to_owned());
    principal.tenant_id = Some(tenant(t));
    RequestContext {
        principal,
        ..RequestContext::local(tenant(t), namespace(1))
    }
}

/// Admits calls of `ctx` until one is refused (at most `limit`); the number admitted and the
/// refusal.
async fn spend(limiter: &dyn RateLimit, ctx: &RequestContext, limit: u32) -> (u32, RateError) {
    for admitted in 0..limit {
        if let Err(e) = limiter.admit(ctx).await {
            return (admitted, e);
        }
    }
    panic!(
        "clause 2: {limit} calls of {} were all admitted",
        ctx.principal.subject
    );
}

/// Clauses 1 and 2: a credential gets its burst, is then refused with a positive wait, and is
/// admitted again after waiting it.
pub async fn a_burst_then_a_wait(fixture: RateFixture) {
    let limiter = fixture.limiter.as_ref();
    let ctx = caller("burst", 1);
    let (admitted, refusal) = spend(limiter, &ctx, fixture.credential_burst * 4 + 4).await;
    assert!(
        admitted >= fixture.credential_burst,
        "clause 1: {admitted} calls admitted, the burst is {}",
        fixture.credential_burst
    );
    let RateError::Limited {
        scope,
        retry_after_ms,
    } = refusal
    else {
        panic!("clause 2: the refusal past the burst is not Limited: {refusal}");
    };
    assert_eq!(
        scope,
        RateScope::Credential,
        "clause 2: the credential's rate refused it"
    );
    assert!(
        retry_after_ms >= 1,
        "clause 2: retry_after_ms is at least 1"
    );
    tokio::time::sleep(Duration::from_millis(retry_after_ms + 5)).await;
    limiter
        .admit(&ctx)
        .await
        .expect("clause 2: admitted again after waiting retry_after_ms");
}

/// Clause 3: one credential's spent burst leaves other credentials and other tenants alone,
/// and a tenant's credentials together share the tenant's burst.
pub async fn keys_are_independent(fixture: RateFixture) {
    let limiter = fixture.limiter.as_ref();
    let spent = caller("spent", 1);
    spend(limiter, &spent, fixture.credential_burst * 4 + 4).await;
    limiter
        .admit(&caller("neighbour", 1))
        .await
        .expect("clause 3: another credential of the tenant keeps its own rate");
    limiter
        .admit(&caller("spent", 2))
        .await
        .expect("clause 3: the same name in another tenant keeps its own rate");
    // Many credentials of tenant 3, one call each: the tenant's burst stops them.
    let mut admitted = 0;
    let mut refusal = None;
    for i in 0..fixture.tenant_burst * 4 + 4 {
        match limiter.admit(&caller(&format!("member-{i}"), 3)).await {
            Ok(()) => admitted += 1,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    assert!(
        admitted >= fixture.tenant_burst,
        "clause 3: tenant 3's credentials got {admitted} calls, its burst is {}",
        fixture.tenant_burst
    );
    assert!(
        matches!(
            refusal,
            Some(RateError::Limited {
                scope: RateScope::Tenant,
                ..
            })
        ),
        "clause 3: the tenant's rate refuses its credentials together: {refusal:?}"
    );
    limiter
        .admit(&caller("member-0", 2))
        .await
        .expect("clause 3: another tenant keeps its own rate");
}

/// Clause 4: with its shared state unreachable, the limiter still limits (or refuses as
/// unavailable). Vacuous without a degraded twin.
pub async fn degraded_still_limits(fixture: RateFixture) {
    let Some(degraded) = fixture.degraded else {
        return;
    };
    let ctx = caller("degraded", 1);
    let limit = fixture.credential_burst * 4 + 4;
    for _ in 0..limit {
        if degraded.admit(&ctx).await.is_err() {
            return;
        }
    }
    panic!("clause 4: a limiter without its shared state admitted {limit} calls at once");
}

/// Stamps the `RateLimit` suite onto `$factory`, an async fn returning a
/// [`RateFixture`](crate::conformance::RateFixture) around a fresh limiter.
#[macro_export]
macro_rules! rate_limit_conformance {
    ($factory:path) => {
        $crate::__fixture_tests!(
            $factory,
            rate_limit,
            a_burst_then_a_wait,
            keys_are_independent,
            degraded_still_limits
        );
    };
}
