//! The deterministic engine: define-time validation, the compiled evaluation plan, stage
//! evaluation, decisions and the one transition of a run. Nothing here does I/O or reads a
//! clock (except [`issue_packets`], which calls the disclosure seams); the service layer
//! ([`crate::service`]) feeds it evidence and persists what it decides, and runpack replay
//! ([`crate::runpack`]) re-decides recorded runs through the same [`transition`].

mod decide;
mod limits;
mod plan;
pub mod transition;
mod validate;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use decide::{
    DisclosureContext, DisclosureFailure, Verdict, decide, decide_timeout, issue_packets,
};
pub use limits::{Limits, MAX_CONCURRENT_QUERIES_LIMIT};
pub(crate) use plan::normalise_answer;
pub use plan::{OutcomeBuffers, Plan, StageOutcome};
pub use validate::{SpecError, from_json_value, parse_json, validate_spec};

use crate::evidence::{EvidenceAnchor, TrustLane, TrustRequirement};
use crate::hashing::HashAlgorithm;
use crate::ids::ProviderId;
use crate::ret::LogicMode;

/// In which order a stage's conditions are queried. The recorded evidence is sorted by condition
/// id either way, so the order never changes a decision or a hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ConditionOrder {
    /// First appearance in the stage's gates, depth first.
    #[default]
    Spec,
    /// Sorted by `sha256("{seed}:{condition_id}")`.
    DeterministicShuffle {
        /// The shuffle seed.
        seed: u64,
    },
}

/// What an anchor policy requires of one provider's evidence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorRequirement {
    /// The required `anchor_type`.
    pub anchor_type: String,
    /// Fields the anchor value must carry as a string or number.
    pub required_fields: Vec<String>,
}

impl AnchorRequirement {
    /// Checks an evidence anchor against this requirement.
    ///
    /// # Errors
    /// The rule the anchor breaks.
    pub fn check(&self, anchor: Option<&EvidenceAnchor>) -> Result<(), String> {
        let anchor = anchor.ok_or("missing evidence_anchor")?;
        if anchor.anchor_type != self.anchor_type {
            return Err(format!(
                "anchor_type mismatch: expected {} got {}",
                self.anchor_type, anchor.anchor_type
            ));
        }
        let value: serde_json::Value = serde_json::from_str(&anchor.anchor_value)
            .map_err(|_| "anchor_value must be canonical JSON")?;
        let fields = value
            .as_object()
            .ok_or("anchor_value must be a JSON object")?;
        for field in &self.required_fields {
            match fields.get(field) {
                None => return Err(format!("anchor field {field} missing")),
                Some(serde_json::Value::String(_) | serde_json::Value::Number(_)) => {}
                Some(serde_json::Value::Null) => {
                    return Err(format!("anchor field {field} must be set"));
                }
                Some(serde_json::Value::Bool(_)) => {
                    return Err(format!("anchor field {field} must be string or number"));
                }
                Some(_) => return Err(format!("anchor field {field} must be scalar")),
            }
        }
        Ok(())
    }
}

/// How the engine evaluates and hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Three-valued logic for And/Or.
    pub logic_mode: LogicMode,
    /// Digest algorithm for specs, evidence and payloads.
    pub hash_algorithm: HashAlgorithm,
    /// The lowest lane any evidence needs.
    pub trust: TrustRequirement,
    /// Per-provider requirements; they can only tighten `trust`.
    pub provider_trust: BTreeMap<ProviderId, TrustRequirement>,
    /// Anchor requirements per provider.
    pub anchor_policy: BTreeMap<ProviderId, AnchorRequirement>,
    /// Query order.
    pub condition_order: ConditionOrder,
    /// Size limits.
    pub limits: Limits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            logic_mode: LogicMode::Kleene,
            hash_algorithm: HashAlgorithm::Sha256,
            trust: TrustRequirement {
                min_lane: TrustLane::Verified,
            },
            provider_trust: BTreeMap::new(),
            anchor_policy: BTreeMap::new(),
            condition_order: ConditionOrder::Spec,
            limits: Limits::default(),
        }
    }
}
