//! The scenario specification: stages, gates, conditions and packets, in the reference JSON wire
//! shape. Every struct rejects unknown fields; list fields may be omitted and default to empty,
//! and are always written out, so the canonical form (and the spec hash) does not depend on
//! whether the author wrote `[]`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::comparator::Comparator;
use crate::evidence::{EvidenceQuery, TrustRequirement};
use crate::hashing::{HashAlgorithm, HashDigest, HashError};
use crate::ids::{
    ConditionId, GateId, NamespaceId, PacketId, PolicyId, ScenarioId, SchemaId, SpecVersion,
    StageId, TenantId,
};
use crate::ret::{GateOutcome, Requirement};
use crate::time::Timestamp;

/// A scenario: an ordered list of stages and the conditions their gates use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioSpec {
    /// The scenario's id within its (tenant, namespace).
    pub scenario_id: ScenarioId,
    /// The namespace the scenario belongs to.
    pub namespace_id: NamespaceId,
    /// The author's version label.
    pub spec_version: SpecVersion,
    /// The stages; the first is where every run starts.
    pub stages: Vec<StageSpec>,
    /// The conditions gates may reference.
    #[serde(default)]
    pub conditions: Vec<ConditionSpec>,
    /// Policies the scenario names (carried, not interpreted by the engine).
    #[serde(default)]
    pub policies: Vec<PolicyRef>,
    /// Schemas the scenario names (carried, not interpreted by the engine).
    #[serde(default)]
    pub schemas: Vec<SchemaRef>,
    /// When set, the only tenant that may define and run this scenario.
    #[serde(default)]
    pub default_tenant_id: Option<TenantId>,
}

/// A policy named by a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRef {
    /// The policy.
    pub policy_id: PolicyId,
    /// What it is for.
    #[serde(default)]
    pub description: Option<String>,
}

/// A schema named by a scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// The schema.
    pub schema_id: SchemaId,
    /// Its version.
    #[serde(default)]
    pub version: Option<String>,
    /// Where it is published.
    #[serde(default)]
    pub uri: Option<String>,
}

/// One stage: packets disclosed on entry, gates that must pass, and where to go next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// The stage's id, unique in the scenario.
    pub stage_id: StageId,
    /// Packets disclosed when a run enters this stage.
    #[serde(default)]
    pub entry_packets: Vec<PacketSpec>,
    /// Gates evaluated on every trigger while the run is in this stage.
    #[serde(default)]
    pub gates: Vec<GateSpec>,
    /// Where a run goes when the stage passes.
    pub advance_to: AdvanceTo,
    /// How long the stage may take, measured by tick triggers.
    #[serde(default)]
    pub timeout: Option<TimeoutSpec>,
    /// What a tick past the timeout does.
    #[serde(default)]
    pub on_timeout: TimeoutPolicy,
}

/// A gate: a requirement tree over conditions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// The gate's id, unique across the scenario.
    pub gate_id: GateId,
    /// The requirement tree.
    pub requirement: Requirement,
    /// A stricter trust requirement for this gate's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustRequirement>,
}

/// A condition: one evidence query and the comparison applied to its answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    /// The condition's id, unique in the scenario.
    pub condition_id: ConditionId,
    /// The question to the provider.
    pub query: EvidenceQuery,
    /// How the answer is judged.
    pub comparator: Comparator,
    /// The right-hand operand. `null` and absent are the same.
    #[serde(default)]
    pub expected: Option<Value>,
    /// Policy tags (carried, not interpreted by the engine).
    #[serde(default)]
    pub policy_tags: Vec<String>,
    /// A stricter trust requirement for this condition's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustRequirement>,
}

/// A packet disclosed when a run enters a stage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PacketSpec {
    /// The packet's id, unique across the scenario.
    pub packet_id: PacketId,
    /// The schema of the payload.
    pub schema_id: SchemaId,
    /// The payload's media type.
    pub content_type: String,
    /// Labels a disclosure policy may match.
    #[serde(default)]
    pub visibility_labels: Vec<String>,
    /// Tags a disclosure policy may match.
    #[serde(default)]
    pub policy_tags: Vec<String>,
    /// When the packet stops being valid.
    #[serde(default)]
    pub expiry: Option<Timestamp>,
    /// The content.
    pub payload: PacketPayload,
}

/// A packet or submission payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PacketPayload {
    /// Inline JSON.
    Json {
        /// The JSON value; shared, as a stage's packet goes into every decision that enters the
        /// stage (its journal entry and its answer) without being copied.
        value: Arc<Value>,
    },
    /// Inline bytes.
    Bytes {
        /// The bytes, as integers 0..=255 on the wire.
        bytes: Vec<u8>,
    },
    /// Content held elsewhere, identified by its hash.
    External {
        /// Where it is and what it hashes to.
        content_ref: ContentRef,
    },
}

/// A reference to externally held content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentRef {
    /// Where the content is.
    pub uri: String,
    /// Its digest.
    pub content_hash: HashDigest,
    /// How it is encrypted, if it is.
    #[serde(default)]
    pub encryption: Option<String>,
}

/// Where a run goes when a stage passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdvanceTo {
    /// The next stage in the list; after the last stage the run completes.
    Linear,
    /// A named stage.
    Fixed {
        /// The stage to enter.
        stage_id: StageId,
    },
    /// The run completes when this stage passes.
    Terminal,
    /// The first rule whose gate has the named outcome picks the next stage.
    Branch {
        /// Rules, tried in order.
        branches: Vec<BranchRule>,
        /// Where to go when no rule matches and every gate is true.
        #[serde(default)]
        default: Option<StageId>,
    },
}

/// A branch rule: when `gate_id` has `outcome`, go to `next_stage_id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchRule {
    /// A gate of the same stage.
    pub gate_id: GateId,
    /// The outcome that selects this rule.
    pub outcome: GateOutcome,
    /// The stage to enter.
    pub next_stage_id: StageId,
}

/// How long a stage may take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutSpec {
    /// Milliseconds (or logical ticks) after entering the stage.
    pub timeout_ms: u64,
    /// Policy tags (carried, not interpreted by the engine).
    #[serde(default)]
    pub policy_tags: Vec<String>,
}

/// What a tick trigger past a stage's timeout does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutPolicy {
    /// The run fails with reason `timeout`.
    #[default]
    Fail,
    /// Every gate counts as true and the run advances, flagged as a timeout.
    AdvanceWithFlag,
    /// Every gate counts as unknown and the branch rules on `unknown` pick the next stage.
    AlternateBranch,
}

impl PacketPayload {
    /// The size the payload counts against the payload limit: canonical JSON bytes, raw bytes,
    /// or 0 for external content.
    ///
    /// # Errors
    /// [`HashError`] when a JSON value has no canonical form.
    pub fn inline_size(&self) -> Result<usize, HashError> {
        Ok(match self {
            Self::Json { value } => crate::hashing::canonical_json(value)?.len(),
            Self::Bytes { bytes } => bytes.len(),
            Self::External { .. } => 0,
        })
    }

    /// The content digest: of the canonical JSON, of the raw bytes, or the external reference's
    /// own digest.
    ///
    /// # Errors
    /// [`HashError`] when a JSON value has no canonical form.
    pub fn content_hash(&self, algorithm: HashAlgorithm) -> Result<HashDigest, HashError> {
        Ok(match self {
            Self::Json { value } => algorithm.digest_json(value)?,
            Self::Bytes { bytes } => algorithm.digest(bytes),
            Self::External { content_ref } => content_ref.content_hash.clone(),
        })
    }
}

impl ScenarioSpec {
    /// The stage with this id and its position.
    #[must_use]
    pub fn stage(&self, stage_id: &StageId) -> Option<(usize, &StageSpec)> {
        self.stages
            .iter()
            .enumerate()
            .find(|(_, s)| &s.stage_id == stage_id)
    }
}
