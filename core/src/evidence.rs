//! Evidence: what a provider answers, how trustworthy it is, and how it is recorded.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hashing::{HashAlgorithm, HashDigest, HashError};
use crate::ids::{
    CheckId, ConditionId, CorrelationId, NamespaceId, ProviderId, RunId, ScenarioId, StageId,
    TenantId, TriggerId,
};
use crate::ret::TriState;
use crate::time::Timestamp;

/// One question to a provider: which provider, which check, with which parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    /// The provider to ask.
    pub provider_id: ProviderId,
    /// The provider's check.
    pub check_id: CheckId,
    /// Check parameters, validated against the check's params schema at define time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// How much a piece of evidence is trusted. `asserted` < `verified`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLane {
    /// Claimed by the caller (precheck, agent-supplied data).
    Asserted,
    /// Fetched by the engine from a provider it trusts.
    Verified,
}

/// The lowest lane a gate or condition accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRequirement {
    /// The lowest acceptable lane.
    pub min_lane: TrustLane,
}

impl TrustRequirement {
    /// The stricter of two requirements. Overrides can only tighten.
    #[must_use]
    pub fn stricter(self, other: Self) -> Self {
        Self {
            min_lane: self.min_lane.max(other.min_lane),
        }
    }

    /// Whether `lane` satisfies this requirement.
    #[must_use]
    pub fn admits(self, lane: TrustLane) -> bool {
        lane >= self.min_lane
    }
}

/// An evidence value: JSON, or raw bytes (an array of integers 0..=255 on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    content = "value",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum EvidenceValue {
    /// A JSON value.
    Json(Value),
    /// Raw bytes.
    Bytes(Vec<u8>),
}

/// A provider's pointer to where evidence came from, checkable offline by an anchor policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceAnchor {
    /// The kind of anchor, such as `file_path_rooted`.
    pub anchor_type: String,
    /// Canonical JSON of the anchor's fields.
    pub anchor_value: String,
}

/// A reference to evidence held elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRef {
    /// Where the evidence lives.
    pub uri: String,
}

/// A provider's signature over the evidence hash. Stored verbatim; checked by the transport that
/// received it (external providers), never by the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceSignature {
    /// The signature scheme, such as `ed25519`.
    pub scheme: String,
    /// Which key signed.
    pub key_id: String,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

impl EvidenceValue {
    /// The value's digest: over its canonical JSON, or over the raw bytes. This is the digest
    /// the engine records as `evidence_hash` and a provider signs.
    ///
    /// # Errors
    /// [`HashError`] when the JSON cannot be canonicalised.
    pub fn digest(&self, algorithm: HashAlgorithm) -> Result<HashDigest, HashError> {
        match self {
            Self::Json(value) => algorithm.digest_json(value),
            Self::Bytes(bytes) => Ok(algorithm.digest(bytes)),
        }
    }
}

/// A structured evidence error. Its presence makes the condition unknown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceError {
    /// A stable code: `provider_error`, `evidence_too_large`, `trust_lane`, `anchor_invalid`, ...
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
    /// Optional structured details.
    #[serde(default)]
    pub details: Option<Value>,
}

impl EvidenceError {
    /// An error with no details.
    #[must_use]
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            details: None,
        }
    }
}

fn default_lane() -> TrustLane {
    TrustLane::Verified
}

/// A provider's answer to one query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceResult {
    /// The value; absent when the provider has none.
    #[serde(default)]
    pub value: Option<EvidenceValue>,
    /// The trust lane of this answer; `verified` when omitted.
    #[serde(default = "default_lane")]
    pub lane: TrustLane,
    /// Set when the provider could not answer.
    #[serde(default)]
    pub error: Option<EvidenceError>,
    /// The digest of `value`; recomputed by the engine, never trusted from the provider.
    #[serde(default)]
    pub evidence_hash: Option<HashDigest>,
    /// Where the evidence lives.
    #[serde(default)]
    pub evidence_ref: Option<EvidenceRef>,
    /// An anchor for offline checks.
    #[serde(default)]
    pub evidence_anchor: Option<EvidenceAnchor>,
    /// A provider signature.
    #[serde(default)]
    pub signature: Option<EvidenceSignature>,
    /// The media type of `value`.
    #[serde(default)]
    pub content_type: Option<String>,
}

impl EvidenceResult {
    /// A verified JSON value.
    #[must_use]
    pub fn json(value: Value) -> Self {
        Self {
            value: Some(EvidenceValue::Json(value)),
            ..Self::empty(TrustLane::Verified)
        }
    }

    /// A result with no value in `lane`.
    #[must_use]
    pub fn empty(lane: TrustLane) -> Self {
        Self {
            value: None,
            lane,
            error: None,
            evidence_hash: None,
            evidence_ref: None,
            evidence_anchor: None,
            signature: None,
            content_type: None,
        }
    }

    /// A failed answer: no value, the given error.
    #[must_use]
    pub fn failed(error: EvidenceError) -> Self {
        Self {
            error: Some(error),
            ..Self::empty(TrustLane::Verified)
        }
    }

    /// This result with the lane replaced.
    #[must_use]
    pub fn with_lane(mut self, lane: TrustLane) -> Self {
        self.lane = lane;
        self
    }
}

/// Where a query is asked from. Providers may use it; they must not use a clock instead of
/// `trigger_time`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceContext {
    /// The tenant of the run.
    pub tenant_id: TenantId,
    /// The namespace of the run.
    pub namespace_id: NamespaceId,
    /// The run.
    pub run_id: RunId,
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The stage being evaluated.
    pub stage_id: StageId,
    /// The trigger being decided.
    pub trigger_id: TriggerId,
    /// The trigger's time, the only clock a provider may read.
    pub trigger_time: Timestamp,
    /// The request's correlation id.
    pub correlation_id: Option<CorrelationId>,
}

impl EvidenceContext {
    /// The context of `event` deciding the run whose head is `head`: its stage, its trigger,
    /// the trigger's time and correlation id.
    #[must_use]
    pub fn for_trigger(head: &crate::run::RunHead, event: &crate::run::TriggerEvent) -> Self {
        Self {
            tenant_id: head.key.tenant_id,
            namespace_id: head.key.namespace_id,
            run_id: head.key.run_id.clone(),
            scenario_id: head.scenario_id.clone(),
            stage_id: head.current_stage_id.clone(),
            trigger_id: event.trigger_id.clone(),
            trigger_time: event.time,
            correlation_id: event.correlation_id.clone(),
        }
    }
}

/// A condition's evidence as recorded in a gate evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRecord {
    /// The condition.
    pub condition_id: ConditionId,
    /// Its status for the gate it is recorded under (after trust rules).
    pub status: TriState,
    /// The normalised provider answer.
    pub result: EvidenceResult,
}
