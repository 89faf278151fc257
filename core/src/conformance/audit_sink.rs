//! [`AuditSink`] contract checks.
//!
//! The seam only appends, so the factory also hands over an [`AuditProbe`] that reads back what
//! the sink recorded: its file, its table, its memory.
//!
//! A sink may keep separate trails: each tenant's call events, and the events of refused
//! requests (Postgres keeps a trail per tenant and a deployment-level stream). Order is checked
//! within each trail; the order between trails is the sink's own. As the service does, every
//! call's events share one tenant; the suite uses tenants 1 and 2, namespace 1.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{namespace, tenant};
use crate::access::{
    AccessEvent, AccessRefusal, Action, AuditEvent, AuditOutcome, AuditRecord, AuditSink,
    InMemoryAuditSink, JsonLinesAuditSink,
};
use crate::hashing::HashAlgorithm;
use crate::ids::TenantId;

/// Reads back what an audit sink recorded.
#[async_trait]
pub trait AuditProbe: Send + Sync {
    /// Every record, call events and access events, each trail in the order recorded (the
    /// trails may follow one another or interleave).
    async fn records(&self) -> Vec<AuditRecord>;
}

#[async_trait]
impl AuditProbe for InMemoryAuditSink {
    async fn records(&self) -> Vec<AuditRecord> {
        Self::records(self)
    }
}

/// Reads the sink's file, one record per line, as an auditor would.
#[async_trait]
impl AuditProbe for JsonLinesAuditSink {
    async fn records(&self) -> Vec<AuditRecord> {
        let text = std::fs::read_to_string(self.path()).expect("read the audit file");
        text.lines()
            .map(|line| serde_json::from_str(line).expect("an audit line is a record"))
            .collect()
    }
}

/// A sink and how to read it back.
pub struct AuditFixture {
    /// The sink under test, with nothing recorded.
    pub sink: Arc<dyn AuditSink>,
    /// Reads what it recorded.
    pub probe: Arc<dyn AuditProbe>,
}

/// A call event of tenant `t` (namespace 1) on `resource`, every optional field set, a failure
/// every third `n`.
#[must_use]
pub fn call_event(t: u64, n: u64, resource: &str) -> AuditEvent {
    AuditEvent {
        principal: format!("agent-{}", n % 3),
        action: Action::ALL[usize::try_from(n).unwrap_or(0) % Action::ALL.len()],
        tenant_id: tenant(t),
        namespace_id: namespace(1),
        resource: resource.to_owned(),
        outcome: if n % 3 == 2 {
            AuditOutcome::Failure {
                kind: "permission_denied".into(),
            }
        } else {
            AuditOutcome::Success
        },
        request_id: Some(format!("req-{n}")),
        correlation_id: Some(format!("corr-{n}").parse().expect("fixture correlation id")),
        request_hash: Some(HashAlgorithm::Sha256.digest(resource.as_bytes())),
        credential: Some(crate::access::CallerCredential {
            method: crate::identity::AuthMethod::ApiKey,
            issuer: Some("decision-gate".into()),
            credential_id: Some(format!("key-{n}")),
        }),
    }
}

/// An access event (a request refused before the service) numbered `n`.
#[must_use]
pub fn access_event(n: u64) -> AccessEvent {
    AccessEvent {
        refusal: AccessRefusal::Unauthenticated,
        transport: "http".into(),
        principal: None,
        peer: Some(format!("127.0.0.1:{}", 40_000 + n)),
        tool: Some("scenario_next".into()),
        request_id: Some(format!("refused-{n}")),
        correlation_id: None,
        presented_hash: Some(crate::access::KeyedDigest {
            algorithm: crate::access::KeyedAlgorithm::HmacSha256,
            value: format!("{n:064x}"),
        }),
        detail: format!("unknown token {n}"),
    }
}

/// The trail a record joins: its tenant's for a call event, the access trail (`None`) for a
/// refused request.
type Trails = BTreeMap<Option<TenantId>, Vec<AuditRecord>>;

fn trails(records: impl IntoIterator<Item = AuditRecord>) -> Trails {
    let mut trails = Trails::new();
    for r in records {
        let trail = match &r {
            AuditRecord::Call(e) => Some(e.tenant_id),
            AuditRecord::Access(_) => None,
        };
        trails.entry(trail).or_default().push(r);
    }
    trails
}

/// Clause 1: every event of `append` and `append_access` is recorded as given, in call order
/// and in order within a call, on its trail; an empty `append` records nothing.
pub async fn events_are_recorded_in_order(fixture: AuditFixture) {
    let (sink, probe) = (fixture.sink.as_ref(), fixture.probe.as_ref());
    let mut expected = Vec::new();
    for call in [
        vec![
            call_event(1, 0, "run/a"),
            call_event(1, 1, "run/b"),
            call_event(1, 2, "run/c"),
        ],
        vec![],
        vec![call_event(2, 4, "scenario/d")],
        vec![call_event(1, 6, "run/e")],
        vec![call_event(2, 7, "run/f"), call_event(2, 8, "run/g")],
    ] {
        sink.append(&call).await.expect("append");
        expected.extend(call.into_iter().map(AuditRecord::Call));
        let n = expected.len() as u64;
        sink.append_access(&access_event(n)).await.expect("append");
        expected.push(AuditRecord::Access(access_event(n)));
    }
    assert_eq!(
        trails(probe.records().await),
        trails(expected),
        "clause 1: every event recorded as given, in order"
    );
}

/// Clause 1 under contention: of concurrent calls, every event is recorded once, each call's
/// events in their order.
pub async fn concurrent_calls_are_all_recorded(fixture: AuditFixture) {
    const CALLS: u64 = 32;
    let events = |i: u64| -> Vec<AuditEvent> {
        (0..3)
            .map(|j| call_event(1 + i % 2, i * 3 + j, &format!("run/{i}/{j}")))
            .collect()
    };
    let tasks: Vec<_> = (0..CALLS)
        .map(|i| {
            let sink = fixture.sink.clone();
            let events = events(i);
            tokio::spawn(async move {
                sink.append(&events).await?;
                sink.append_access(&access_event(i)).await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("append task").expect("append");
    }
    let records = fixture.probe.records().await;
    assert_eq!(
        records.len(),
        usize::try_from(CALLS * 4).unwrap_or(usize::MAX),
        "clause 1: every event of concurrent calls is recorded"
    );
    for i in 0..CALLS {
        let prefix = format!("run/{i}/");
        let mine: Vec<&AuditEvent> = records
            .iter()
            .filter_map(|r| match r {
                AuditRecord::Call(e) if e.resource.starts_with(&prefix) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(
            mine,
            events(i).iter().collect::<Vec<_>>(),
            "clause 1: call {i}'s events are recorded, in its order"
        );
        let access = AuditRecord::Access(access_event(i));
        assert_eq!(
            records.iter().filter(|r| **r == access).count(),
            1,
            "clause 1: call {i}'s access event is recorded once"
        );
    }
}

/// Clause 2: what was recorded stays: after every append, each trail read before it is an
/// unchanged prefix of the same trail read after it.
pub async fn records_are_never_changed_or_removed(fixture: AuditFixture) {
    let (sink, probe) = (fixture.sink.as_ref(), fixture.probe.as_ref());
    let mut seen = Trails::new();
    for n in 0..40 {
        let added = if n % 4 == 3 {
            sink.append_access(&access_event(n)).await.expect("append");
            vec![AuditRecord::Access(access_event(n))]
        } else {
            // Repeats of one event are records of their own, not updates of the first.
            let events = vec![call_event(1 + n % 2, n % 5, "run/same"); 1 + (n % 3) as usize];
            sink.append(&events).await.expect("append");
            events.into_iter().map(AuditRecord::Call).collect()
        };
        let added = trails(added);
        let now = trails(probe.records().await);
        for (trail, before) in &seen {
            let after = now.get(trail).map_or(&[][..], Vec::as_slice);
            assert!(
                after.len() >= before.len() && after[..before.len()] == before[..],
                "clause 2: after append {n}, earlier records of trail {trail:?} were changed \
                 or removed"
            );
        }
        for (trail, after) in &now {
            let before = seen.get(trail).map_or(0, Vec::len);
            let new = added.get(trail).map_or(&[][..], Vec::as_slice);
            assert_eq!(
                after.get(before..),
                Some(new),
                "clause 1: append {n} recorded its events after the earlier ones"
            );
        }
        seen = now;
    }
}

/// Stamps the `AuditSink` suite onto `$factory`, an async fn returning an
/// [`AuditFixture`](crate::conformance::AuditFixture) around a fresh, empty sink:
///
/// ```text
/// async fn fixture() -> AuditFixture { /* a fresh sink and its reader */ }
/// decision_gate_core::audit_sink_conformance!(fixture);
/// ```
#[macro_export]
macro_rules! audit_sink_conformance {
    ($factory:path) => {
        $crate::__fixture_tests!(
            $factory,
            audit_sink,
            events_are_recorded_in_order,
            concurrent_calls_are_all_recorded,
            records_are_never_changed_or_removed
        );
    };
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::access::AuditError;

    /// Keeps only the latest call's records, as a sink that rewrites its file would.
    #[derive(Default)]
    struct Forgetful(Mutex<Vec<AuditRecord>>);

    #[async_trait]
    impl AuditSink for Forgetful {
        async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            if !events.is_empty() {
                *self.0.lock().unwrap() = events.iter().cloned().map(AuditRecord::Call).collect();
            }
            Ok(())
        }

        async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
            *self.0.lock().unwrap() = vec![AuditRecord::Access(event.clone())];
            Ok(())
        }
    }

    #[async_trait]
    impl AuditProbe for Forgetful {
        async fn records(&self) -> Vec<AuditRecord> {
            self.0.lock().unwrap().clone()
        }
    }

    /// Records access events but drops the last event of every call.
    #[derive(Default)]
    struct Lossy(InMemoryAuditSink);

    #[async_trait]
    impl AuditSink for Lossy {
        async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
            self.0
                .append(&events[..events.len().saturating_sub(1)])
                .await
        }

        async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
            self.0.append_access(event).await
        }
    }

    fn fixture<S: AuditSink + AuditProbe + 'static>(sink: S) -> AuditFixture {
        let sink = Arc::new(sink);
        AuditFixture {
            sink: sink.clone(),
            probe: sink,
        }
    }

    #[tokio::test]
    #[should_panic(expected = "clause 2")]
    async fn clause_2_catches_a_sink_that_overwrites() {
        records_are_never_changed_or_removed(fixture(Forgetful::default())).await;
    }

    #[tokio::test]
    #[should_panic(expected = "clause 1")]
    async fn clause_1_catches_a_sink_that_drops_events() {
        let sink = Arc::new(Lossy::default());
        events_are_recorded_in_order(AuditFixture {
            probe: Arc::new(ProbeOf(sink.clone())),
            sink,
        })
        .await;
    }

    struct ProbeOf(Arc<Lossy>);

    #[async_trait]
    impl AuditProbe for ProbeOf {
        async fn records(&self) -> Vec<AuditRecord> {
            self.0.0.records()
        }
    }
}
