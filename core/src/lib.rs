//! # Decision Gate core
//!
//! A deterministic checkpoint engine. A **scenario** is a list of **stages**; each stage has
//! **gates**; each gate is a requirement tree (And / Or / Not / RequireGroup / Condition) over
//! **conditions**, and a condition asks an **evidence provider** one question and compares the
//! answer. Outcomes are three-valued. A **run** moves through the stages as **triggers** arrive;
//! every trigger yields one **decision** (start, advance, hold, complete, fail), and entering a
//! stage discloses its **packets**. Every decision is recorded in an append-only journal with
//! hashes over canonical JSON, and the engine never reads a clock: the same inputs always give
//! the same decisions and the same hashes.
//!
//! ```
//! use std::sync::Arc;
//! use decision_gate_core::{DecisionGate, InMemoryEvidence, NextRequest, RequestContext, StartRequest};
//! use decision_gate_core::{DecisionOutcome, NamespaceId, TenantId, Timestamp};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let ci = Arc::new(InMemoryEvidence::new("ci".parse()?, ["build".parse()?]));
//! let gate = DecisionGate::builder().provider(ci.clone())?.build();
//! let ctx = RequestContext::local(TenantId::new(1)?, NamespaceId::new(1)?);
//! gate.define_scenario_json(&ctx, include_str!("../../examples/scenarios/release.json")).await?;
//! let start = StartRequest { scenario_id: "release".parse()?, run_id: "r1".parse()?, dispatch_targets: vec![], started_at: Timestamp::Logical(0) };
//! gate.start_run(&ctx, start).await?;
//! ci.set_json(&"build".parse()?, serde_json::json!("passed"));
//! let next = NextRequest { scenario_id: "release".parse()?, run_id: "r1".parse()?, trigger_id: "t1".parse()?, agent_id: "agent".into(), time: Timestamp::Logical(1) };
//! let decided = gate.next(&ctx, next).await?;
//! assert!(matches!(decided.decision.outcome, DecisionOutcome::Advance { .. }));
//! # Ok(()) }
//! ```
//!
//! The modules follow the seams of `ARCHITECTURE.md`: the pure engine ([`engine`], [`ret`],
//! [`comparator`], [`hashing`]), the data model ([`spec`], [`run`], [`evidence`],
//! [`disclosure`]), the seams ([`store`], [`provider`], [`access`]) with their open-source
//! backends ([`memory`], `sqlite`), and the [`service`] layer that fixes the call order.

pub mod access;
pub mod comparator;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod disclosure;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod hashing;
pub mod ids;
pub mod memory;
pub mod provider;
pub mod ret;
pub mod run;
pub mod schema;
pub mod service;
pub mod spec;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod store;
pub mod time;

pub use access::{Action, Principal, RequestContext};
pub use comparator::Comparator;
pub use engine::{EngineConfig, Limits};
pub use error::Error;
pub use evidence::{EvidenceResult, TrustLane};
pub use hashing::{HashAlgorithm, HashDigest};
pub use ids::{
    CheckId, ConditionId, CorrelationId, GateId, NamespaceId, PacketId, ProviderId, RunId,
    ScenarioId, StageId, TenantId, TriggerId,
};
pub use memory::MemoryStore;
pub use provider::{EvidenceProvider, InMemoryEvidence, ProviderRegistry};
pub use ret::TriState;
pub use run::{DecisionOutcome, RunStatus, TriggerResult};
pub use service::{DecisionGate, NextRequest, PrecheckRequest, StartRequest, SubmitRequest};
pub use spec::ScenarioSpec;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use time::Timestamp;
