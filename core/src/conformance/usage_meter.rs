//! [`UsageMeter`] contract checks.
//!
//! The seam has no read side, so the factory also hands over a [`UsageProbe`] that reads the
//! totals the meter keeps (its ledger table, its in-memory map), and the quota it enforces, if
//! any, so the suite can run into it.

use std::sync::Arc;

use async_trait::async_trait;

use super::{namespace, tenant};
use crate::access::{InMemoryUsageMeter, UsageError, UsageEvent, UsageMeter, UsageMetric};
use crate::ids::{NamespaceId, TenantId};

/// Reads what a meter has counted.
#[async_trait]
pub trait UsageProbe: Send + Sync {
    /// The total recorded for `tenant_id` and `metric` (0 when nothing was).
    async fn total(&self, tenant_id: TenantId, metric: UsageMetric) -> u64;
}

#[async_trait]
impl UsageProbe for InMemoryUsageMeter {
    async fn total(&self, tenant_id: TenantId, metric: UsageMetric) -> u64 {
        Self::total(self, tenant_id, metric)
    }
}

/// A quota a meter enforces: the total of `metric` for the tenant may not exceed `limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The tenant it applies to.
    pub tenant_id: TenantId,
    /// A namespace of that tenant, for the events the suite records.
    pub namespace_id: NamespaceId,
    /// The metric it limits.
    pub metric: UsageMetric,
    /// The largest total accepted.
    pub limit: u64,
}

/// A meter, how to read it, and what the suite needs to reach its refusals.
pub struct UsageFixture {
    /// The meter under test, with nothing recorded.
    pub meter: Arc<dyn UsageMeter>,
    /// Reads the meter's totals.
    pub probe: Arc<dyn UsageProbe>,
    /// A quota the meter enforces, with nothing counted against it yet; `None` for a meter
    /// without quotas (the open-source one). The suite fills it and checks that `check` then
    /// refuses without effect (contract 1) and that `record` enforces it (contract 3). Keep the
    /// limit small (it is filled by that many concurrent records).
    pub quota: Option<Quota>,
    /// The same kind of meter, unable to decide (its ledger unreachable), if the implementation
    /// can be put in that state (contract 4). `None` for a meter that decides from nothing it
    /// can lose (the in-memory meter has no quotas, so `check` always decides): contract 3 is
    /// then vacuous and left to the implementation's own tests.
    pub undecidable: Option<Arc<dyn UsageMeter>>,
}

/// A usage event of tenant `t` in namespace 1.
#[must_use]
pub fn usage(t: u64, metric: UsageMetric, quantity: u64, key: &str) -> UsageEvent {
    UsageEvent {
        tenant_id: tenant(t),
        namespace_id: namespace(1),
        metric,
        quantity,
        idempotency_key: key.to_owned(),
    }
}

const METRICS: [UsageMetric; 2] = [UsageMetric::ToolCalls, UsageMetric::RunsStarted];

async fn totals(probe: &dyn UsageProbe, t: u64) -> Vec<u64> {
    let mut totals = Vec::new();
    for metric in METRICS {
        totals.push(probe.total(tenant(t), metric).await);
    }
    totals
}

/// Clause 1: `check` changes nothing, whether it passes or refuses: no total moves, and a key it
/// was shown still counts when it is recorded. With a quota, `check` refuses with
/// `QuotaExceeded` once recording would exceed it.
pub async fn check_has_no_effect(fixture: UsageFixture) {
    let (meter, probe) = (fixture.meter.as_ref(), fixture.probe.as_ref());
    meter
        .record(&[usage(1, UsageMetric::ToolCalls, 2, "recorded")])
        .await
        .expect("record");
    let before = totals(probe, 1).await;
    let checked = [
        usage(1, UsageMetric::ToolCalls, 3, "checked"),
        usage(1, UsageMetric::RunsStarted, 1, "checked-too"),
        usage(1, UsageMetric::ToolCalls, 5, "recorded"),
    ];
    for _ in 0..3 {
        meter.check(&checked).await.expect("within every quota");
    }
    assert_eq!(
        totals(probe, 1).await,
        before,
        "clause 1: check changes no total"
    );
    meter.record(&checked).await.expect("record");
    assert_eq!(
        totals(probe, 1).await,
        [before[0] + 3, before[1] + 1],
        "clause 1: keys shown to check count when recorded (and a recorded one does not)"
    );

    let Some(quota) = fixture.quota else {
        return;
    };
    let event = |quantity, key: &str| UsageEvent {
        tenant_id: quota.tenant_id,
        namespace_id: quota.namespace_id,
        metric: quota.metric,
        quantity,
        idempotency_key: key.to_owned(),
    };
    let start = probe.total(quota.tenant_id, quota.metric).await;
    assert!(
        start <= quota.limit,
        "fixture: the quota is already exceeded"
    );
    let fill = [event(quota.limit - start, "fill")];
    meter
        .check(&fill)
        .await
        .expect("fixture: filling the quota fits it");
    meter.record(&fill).await.expect("record");
    let full = probe.total(quota.tenant_id, quota.metric).await;
    assert_eq!(full, quota.limit, "fixture: the quota is full");
    for _ in 0..3 {
        let refused = meter.check(&[event(1, "over")]).await;
        assert!(
            matches!(&refused, Err(UsageError::QuotaExceeded(r))
                if r.metric == quota.metric && r.limit == quota.limit && r.used == quota.limit),
            "clause 1: check refuses what would exceed the quota: {refused:?}"
        );
        assert_eq!(
            probe.total(quota.tenant_id, quota.metric).await,
            full,
            "clause 1: a refusing check changes nothing"
        );
    }
}

/// Clause 2: a key counts once however often it is recorded: twice in one call, again in later
/// calls, beside new keys; other tenants' totals do not move.
pub async fn a_key_counts_once(fixture: UsageFixture) {
    let (meter, probe) = (fixture.meter.as_ref(), fixture.probe.as_ref());
    let a = usage(1, UsageMetric::ToolCalls, 2, "a");
    let b = usage(1, UsageMetric::RunsStarted, 3, "b");
    meter.record(&[a.clone(), a.clone()]).await.expect("record");
    assert_eq!(
        totals(probe, 1).await,
        [2, 0],
        "clause 2: a key repeated in one call counts once"
    );
    meter
        .record(std::slice::from_ref(&a))
        .await
        .expect("record");
    meter.record(&[b.clone(), a.clone()]).await.expect("record");
    meter.record(&[b, a]).await.expect("record");
    assert_eq!(
        totals(probe, 1).await,
        [2, 3],
        "clause 2: a key recorded again counts once"
    );
    assert_eq!(
        totals(probe, 2).await,
        [0, 0],
        "clause 2: usage counts for its own tenant"
    );
}

/// Clause 2 under contention: concurrent calls recording the same keys (in the same order, as
/// concurrent retries of one call do) count each once.
pub async fn concurrent_records_count_a_key_once(fixture: UsageFixture) {
    let shared: Vec<UsageEvent> = (0..10)
        .map(|i| usage(1, UsageMetric::ToolCalls, 1 + i, &format!("shared-{i}")))
        .collect();
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let meter = fixture.meter.clone();
            // The same events in the same order, as retries of one call carry them.
            let mut events = shared.clone();
            events.push(usage(
                1,
                UsageMetric::RunsStarted,
                1,
                &format!("own-{task}"),
            ));
            tokio::spawn(async move { meter.record(&events).await })
        })
        .collect();
    for t in tasks {
        t.await.expect("record task").expect("record");
    }
    assert_eq!(
        totals(fixture.probe.as_ref(), 1).await,
        [(1..=10).sum::<u64>(), 16],
        "clause 2: concurrent records count each key once"
    );
}

/// Clause 3: with a quota, `record` refuses what would exceed it with `QuotaExceeded` and
/// records none of the call's events; keys counted before consume nothing; concurrent records
/// never take the total past the limit, and fill it exactly. Vacuous without a quota.
pub async fn record_enforces_the_quota(fixture: UsageFixture) {
    let Some(quota) = fixture.quota else {
        return;
    };
    let (meter, probe) = (fixture.meter.clone(), fixture.probe.as_ref());
    let event = |metric, quantity, key: &str| UsageEvent {
        tenant_id: quota.tenant_id,
        namespace_id: quota.namespace_id,
        metric,
        quantity,
        idempotency_key: key.to_owned(),
    };
    let other = if quota.metric == UsageMetric::RunsStarted {
        UsageMetric::ToolCalls
    } else {
        UsageMetric::RunsStarted
    };
    let other_before = probe.total(quota.tenant_id, other).await;
    // Contention: more records of one unit each than the limit admits, all at once.
    let extra = 8;
    let tasks: Vec<_> = (0..quota.limit + extra)
        .map(|i| {
            let meter = meter.clone();
            let events = [event(quota.metric, 1, &format!("unit-{i}"))];
            tokio::spawn(async move { meter.record(&events).await })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        match t.await.expect("record task") {
            Ok(()) => admitted += 1,
            Err(UsageError::QuotaExceeded(r)) => {
                assert_eq!(
                    (r.metric, r.limit),
                    (quota.metric, quota.limit),
                    "clause 3: the refusal names the counter and its limit"
                );
                refused += 1;
            }
            Err(e) => panic!("clause 3: an unexpected error under contention: {e}"),
        }
    }
    assert_eq!(
        (admitted, refused),
        (quota.limit, extra),
        "clause 3: concurrent records fill the quota exactly"
    );
    assert_eq!(
        probe.total(quota.tenant_id, quota.metric).await,
        quota.limit,
        "clause 3: the total stops at the limit"
    );
    // A call over the quota records none of its events, not even those of other counters.
    let over = [
        event(other, 1, "over-other"),
        event(quota.metric, 1, "over-quota"),
    ];
    let answer = meter.record(&over).await;
    assert!(
        matches!(&answer, Err(UsageError::QuotaExceeded(r)) if r.used == quota.limit),
        "clause 3: a record past the quota is refused: {answer:?}"
    );
    assert_eq!(
        probe.total(quota.tenant_id, other).await,
        other_before,
        "clause 3: a refused record records none of its events"
    );
    // A key counted before consumes nothing again, so its retry is accepted.
    meter
        .record(&[event(quota.metric, 1, "unit-0")])
        .await
        .expect("clause 3: a key counted before consumes nothing again");
}

/// Clause 4: a meter that cannot decide refuses with `Unavailable` (fail closed). Vacuous when
/// the fixture has no undecidable meter.
pub async fn undecidable_fails_closed(fixture: UsageFixture) {
    let Some(undecidable) = fixture.undecidable else {
        return;
    };
    let answer = undecidable
        .check(&[usage(1, UsageMetric::ToolCalls, 1, "k")])
        .await;
    assert!(
        matches!(answer, Err(UsageError::Unavailable(_))),
        "clause 4: a meter that cannot decide refuses with Unavailable: {answer:?}"
    );
    let answer = undecidable
        .record(&[usage(1, UsageMetric::ToolCalls, 1, "k")])
        .await;
    assert!(
        matches!(answer, Err(UsageError::Unavailable(_))),
        "clause 4: a meter that cannot record refuses with Unavailable: {answer:?}"
    );
}

/// Stamps the `UsageMeter` suite onto `$factory`, an async fn returning a
/// [`UsageFixture`](crate::conformance::UsageFixture) around a fresh meter:
///
/// ```text
/// async fn fixture() -> UsageFixture { /* a fresh meter, its probe, its quota */ }
/// decision_gate_core::usage_meter_conformance!(fixture);
/// ```
#[macro_export]
macro_rules! usage_meter_conformance {
    ($factory:path) => {
        $crate::__fixture_tests!(
            $factory,
            usage_meter,
            check_has_no_effect,
            a_key_counts_once,
            concurrent_records_count_a_key_once,
            record_enforces_the_quota,
            undecidable_fails_closed
        );
    };
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// A meter with a quota on tool calls, optionally broken in one of the ways the suite must
    /// catch.
    #[derive(Default)]
    struct Quotaed {
        totals: Mutex<BTreeMap<(TenantId, UsageMetric), u64>>,
        seen: Mutex<std::collections::HashSet<String>>,
        /// Counts every event, repeated keys included.
        double_counts: bool,
        /// Counts what `check` is shown.
        check_records: bool,
        /// Whether `record` enforces the quota (clause 3).
        enforces: bool,
        down: bool,
    }

    const LIMIT: u64 = 100;

    fn over(used: u64) -> UsageError {
        UsageError::QuotaExceeded(crate::access::QuotaRefusal {
            metric: UsageMetric::ToolCalls,
            period: crate::access::QuotaPeriod::Total,
            limit: LIMIT,
            used,
            reset_at_ms: None,
            retry_after_ms: None,
        })
    }

    #[async_trait]
    impl UsageMeter for Quotaed {
        async fn check(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
            if self.down {
                return Err(UsageError::Unavailable("ledger down".into()));
            }
            let totals = self.totals.lock().unwrap().clone();
            for e in events {
                let now = totals.get(&(e.tenant_id, e.metric)).copied().unwrap_or(0);
                if e.metric == UsageMetric::ToolCalls && now + e.quantity > LIMIT {
                    return Err(over(now));
                }
            }
            if self.check_records {
                self.record(events).await?;
            }
            Ok(())
        }

        async fn record(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
            if self.down {
                return Err(UsageError::Unavailable("ledger down".into()));
            }
            let mut seen = self.seen.lock().unwrap();
            let mut totals = self.totals.lock().unwrap();
            let fresh: Vec<_> = events
                .iter()
                .filter(|e| !seen.contains(&e.idempotency_key) || self.double_counts)
                .collect();
            let adding: u64 = fresh
                .iter()
                .filter(|e| e.metric == UsageMetric::ToolCalls && e.tenant_id == tenant(7))
                .map(|e| e.quantity)
                .sum();
            let now = totals
                .get(&(tenant(7), UsageMetric::ToolCalls))
                .copied()
                .unwrap_or(0);
            if self.enforces && adding > 0 && now + adding > LIMIT {
                return Err(over(now));
            }
            for e in fresh {
                if seen.insert(e.idempotency_key.clone()) || self.double_counts {
                    *totals.entry((e.tenant_id, e.metric)).or_default() += e.quantity;
                }
            }
            Ok(())
        }
    }

    #[async_trait]
    impl UsageProbe for Quotaed {
        async fn total(&self, tenant_id: TenantId, metric: UsageMetric) -> u64 {
            self.totals
                .lock()
                .unwrap()
                .get(&(tenant_id, metric))
                .copied()
                .unwrap_or(0)
        }
    }

    fn fixture(meter: Quotaed) -> UsageFixture {
        let meter = Arc::new(meter);
        UsageFixture {
            meter: meter.clone(),
            probe: meter,
            quota: Some(Quota {
                tenant_id: tenant(7),
                namespace_id: namespace(1),
                metric: UsageMetric::ToolCalls,
                limit: LIMIT,
            }),
            undecidable: Some(Arc::new(Quotaed {
                down: true,
                ..Quotaed::default()
            })),
        }
    }

    fn enforcing() -> Quotaed {
        Quotaed {
            enforces: true,
            ..Quotaed::default()
        }
    }

    async fn fresh() -> UsageFixture {
        fixture(enforcing())
    }

    // A meter with a quota and an undecidable twin passes every check, so the optional parts
    // of the suite run here.
    crate::usage_meter_conformance!(fresh);

    #[tokio::test]
    #[should_panic(expected = "clause 2")]
    async fn clause_2_catches_a_meter_that_double_counts() {
        a_key_counts_once(fixture(Quotaed {
            double_counts: true,
            ..Quotaed::default()
        }))
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 1")]
    async fn clause_1_catches_a_check_that_records() {
        check_has_no_effect(fixture(Quotaed {
            check_records: true,
            ..Quotaed::default()
        }))
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 3")]
    async fn clause_3_catches_a_record_that_ignores_the_quota() {
        record_enforces_the_quota(fixture(Quotaed::default())).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 4")]
    async fn clause_4_catches_a_meter_that_fails_open() {
        let mut f = fixture(enforcing());
        f.undecidable = Some(Arc::new(Quotaed::default()));
        undecidable_fails_closed(f).await;
    }
}
