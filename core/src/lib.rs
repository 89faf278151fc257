#![doc = include_str!("../../README.md")]
//!
//! ## Modules
//!
//! The modules follow the seams of `ARCHITECTURE.md`: the pure engine ([`engine`], [`ret`],
//! [`comparator`], [`hashing`]), the data model ([`spec`], [`run`], [`evidence`],
//! [`disclosure`]), the seams ([`store`], [`provider`], [`access`]) with their open-source
//! backends ([`memory`], `sqlite`), and the [`service`] layer that fixes the call order.

pub mod access;
pub mod at_rest;
pub mod comparator;
mod confine;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod disclosure;
pub mod engine;
pub mod error;
pub mod evidence;
pub mod hashing;
pub mod identity;
pub mod ids;
pub mod memory;
pub mod provider;
pub mod providers;
pub mod ret;
pub mod run;
pub mod runpack;
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
pub use error::{Error, ErrorKind};
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
