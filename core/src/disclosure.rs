//! Disclosure: packets issued on stage entry, the per-target policy that allows them, and the
//! dispatcher that delivers them. Both are seams; the defaults here record and permit.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::hashing::{HashAlgorithm, HashDigest};
use crate::ids::{CorrelationId, PacketId, RunId, ScenarioId, SchemaId, StageId};
use crate::spec::PacketPayload;
use crate::time::Timestamp;

/// Where a packet is delivered.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DispatchTarget {
    /// An agent.
    Agent {
        /// The agent.
        agent_id: String,
    },
    /// A session.
    Session {
        /// The session.
        session_id: String,
    },
    /// An external system.
    External {
        /// The system.
        system: String,
        /// The target within it.
        target: String,
    },
    /// A named channel.
    Channel {
        /// The channel.
        channel: String,
    },
}

impl DispatchTarget {
    /// The variant's wire name.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Agent { .. } => "agent",
            Self::Session { .. } => "session",
            Self::External { .. } => "external",
            Self::Channel { .. } => "channel",
        }
    }
}

/// Labels and tags a disclosure policy matches on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketVisibility {
    /// The packet's visibility labels.
    pub labels: Vec<String>,
    /// The packet's policy tags.
    pub policy_tags: Vec<String>,
}

/// The metadata of an issued packet.
///
/// Fields in canonical (sorted) order: it is hashed on every trigger, and canonical JSON writes
/// members that arrive in order without sorting them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketEnvelope {
    /// The payload's digest.
    pub content_hash: HashDigest,
    /// The payload's media type.
    pub content_type: String,
    /// The decision's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// When it expires.
    pub expiry: Option<Timestamp>,
    /// The decision's time.
    pub issued_at: Timestamp,
    /// The packet.
    pub packet_id: PacketId,
    /// The run.
    pub run_id: RunId,
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// The payload's schema.
    pub schema_id: SchemaId,
    /// The stage entered.
    pub stage_id: StageId,
    /// What policies match on.
    pub visibility: PacketVisibility,
}

/// A dispatcher's receipt for one delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchReceipt {
    /// The delivery's id.
    pub dispatch_id: String,
    /// Where it went.
    pub target: DispatchTarget,
    /// A digest the dispatcher chooses (the default dispatcher hashes the envelope).
    pub receipt_hash: HashDigest,
    /// When (the decision's time).
    pub dispatched_at: Timestamp,
    /// Which dispatcher.
    pub dispatcher: String,
}

/// An issued packet: envelope, full payload and receipts.
///
/// Fields in canonical (sorted) order: it is hashed on every trigger, and canonical JSON writes
/// members that arrive in order without sorting them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketRecord {
    /// The decision that disclosed it.
    pub decision_id: crate::ids::DecisionId,
    /// The envelope.
    pub envelope: PacketEnvelope,
    /// The payload, inline.
    pub payload: PacketPayload,
    /// One receipt per dispatch target.
    pub receipts: Vec<DispatchReceipt>,
}

/// A disclosure policy's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyDecision {
    /// Disclose.
    Permit,
    /// Refuse; the run fails with `policy denied disclosure`.
    Deny,
}

/// A disclosure could not be decided or delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DisclosureError(pub String);

/// Decides, per target, whether a packet may be disclosed.
///
/// # Contract
/// - The answer depends only on the target and the envelope (no clock, no randomness), so a
///   replayed run is disclosed the same way.
///
/// # Errors
/// [`DisclosureError`] when the policy cannot decide; the run fails with that reason.
///
/// # Cancellation
/// Dropping the future has no effect.
#[async_trait]
pub trait PolicyDecider: Send + Sync {
    /// Permit or deny `envelope` for `target`.
    async fn decide(
        &self,
        target: &DispatchTarget,
        envelope: &PacketEnvelope,
    ) -> Result<PolicyDecision, DisclosureError>;
}

/// Delivers one permitted packet to one target.
///
/// # Contract
/// - Called only after the policy permitted every packet of the disclosure for every target.
/// - Called inside the engine step, before its journal entry is appended, so a delivery is not
///   a recorded disclosure (`ARCHITECTURE.md`, invariant 16). The journal is the record: a
///   packet is disclosed when its [`PacketRecord`] is in the run's journal.
/// - May deliver for a decision that is never recorded: the append lost the revision race to
///   a concurrent trigger, the store failed, a concurrent start took the run id, a later
///   delivery of the same disclosure failed (the run records `fail` with no packet), or the
///   call was dropped.
/// - May be called again with the same envelope for the same target: a trigger decided again
///   after a lost race, or a caller's retry. A dispatcher with external effects must be
///   idempotent per (target, envelope): derive `dispatch_id` from them and drop a repeat;
///   where acting on an unrecorded packet matters, the receiver confirms it in the run's
///   journal first.
///
/// # Errors
/// [`DisclosureError`] when delivery fails; the run fails with that reason.
///
/// # Cancellation
/// Dropping the future may leave a delivery in flight.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// Delivers `payload` described by `envelope` to `target`.
    async fn dispatch(
        &self,
        target: &DispatchTarget,
        envelope: &PacketEnvelope,
        payload: &PacketPayload,
    ) -> Result<DispatchReceipt, DisclosureError>;
}

/// The default dispatcher: delivers nothing, and stamps a receipt whose hash is the envelope's
/// digest, so the disclosure is recorded and verifiable.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordingDispatcher;

#[async_trait]
impl Dispatcher for RecordingDispatcher {
    async fn dispatch(
        &self,
        target: &DispatchTarget,
        envelope: &PacketEnvelope,
        _payload: &PacketPayload,
    ) -> Result<DispatchReceipt, DisclosureError> {
        let receipt_hash = HashAlgorithm::Sha256
            .digest_json(envelope)
            .map_err(|e| DisclosureError(e.to_string()))?;
        Ok(DispatchReceipt {
            dispatch_id: format!(
                "{}/{}/{}",
                envelope.run_id,
                envelope.packet_id,
                target.kind()
            ),
            target: target.clone(),
            receipt_hash,
            dispatched_at: envelope.issued_at,
            dispatcher: "record-only".to_owned(),
        })
    }
}

/// One rule of a [`StaticPolicy`]; every non-empty matcher must match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// What the rule decides.
    pub effect: PolicyDecision,
    /// Target kinds (`agent`, `session`, `external`, `channel`) it applies to.
    #[serde(default)]
    pub target_kinds: Vec<String>,
    /// Labels the packet must all carry.
    #[serde(default)]
    pub require_labels: Vec<String>,
    /// Labels the packet must not carry.
    #[serde(default)]
    pub forbid_labels: Vec<String>,
    /// Packets it applies to.
    #[serde(default)]
    pub packet_ids: Vec<PacketId>,
    /// Stages it applies to.
    #[serde(default)]
    pub stage_ids: Vec<StageId>,
    /// Scenarios it applies to.
    #[serde(default)]
    pub scenario_ids: Vec<ScenarioId>,
}

impl PolicyRule {
    fn matches(&self, target: &DispatchTarget, envelope: &PacketEnvelope) -> bool {
        let any_or =
            |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
        let labels = &envelope.visibility.labels;
        any_or(&self.target_kinds, target.kind())
            && self.require_labels.iter().all(|l| labels.contains(l))
            && !self.forbid_labels.iter().any(|l| labels.contains(l))
            && (self.packet_ids.is_empty() || self.packet_ids.contains(&envelope.packet_id))
            && (self.stage_ids.is_empty() || self.stage_ids.contains(&envelope.stage_id))
            && (self.scenario_ids.is_empty() || self.scenario_ids.contains(&envelope.scenario_id))
    }
}

/// Ordered rules, first match decides, a default when none matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPolicy {
    /// The rules, in order.
    pub rules: Vec<PolicyRule>,
    /// The answer when no rule matches.
    pub default: PolicyDecision,
}

impl StaticPolicy {
    /// Permits everything.
    #[must_use]
    pub fn permit_all() -> Self {
        Self {
            rules: Vec::new(),
            default: PolicyDecision::Permit,
        }
    }

    /// Denies everything.
    #[must_use]
    pub fn deny_all() -> Self {
        Self {
            rules: Vec::new(),
            default: PolicyDecision::Deny,
        }
    }
}

#[async_trait]
impl PolicyDecider for StaticPolicy {
    async fn decide(
        &self,
        target: &DispatchTarget,
        envelope: &PacketEnvelope,
    ) -> Result<PolicyDecision, DisclosureError> {
        Ok(self
            .rules
            .iter()
            .find(|r| r.matches(target, envelope))
            .map_or(self.default, |r| r.effect))
    }
}
