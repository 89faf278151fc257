//! The evaluation plan: a spec compiled once so that a decision does no parsing or lookups.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use serde_json::Value;

use crate::comparator::Comparison;
use crate::evidence::{
    EvidenceError, EvidenceQuery, EvidenceRecord, EvidenceResult, EvidenceValue, TrustRequirement,
};
use crate::hashing::{HashAlgorithm, HashDigest, HashError, canonical_json_limited};
use crate::ids::{ConditionId, GateId, ProviderId, StageId, TriggerId};
use crate::ret::{CompiledRequirement, TraceStep, TriState};
use crate::run::{GateEvalRecord, GateEvaluation, GateTraceEntry};
use crate::spec::ScenarioSpec;

use super::{ConditionOrder, EngineConfig, SpecError};

#[derive(Debug)]
struct ConditionPlan {
    id: ConditionId,
    query: EvidenceQuery,
    comparison: Comparison,
    trust: Option<TrustRequirement>,
}

#[derive(Debug)]
struct GatePlan {
    gate_id: GateId,
    requirement: CompiledRequirement,
    trust: Option<TrustRequirement>,
    /// The gate's distinct condition slots, sorted by condition id (the recorded order).
    slots_by_id: Vec<u32>,
}

#[derive(Debug)]
struct StagePlan {
    /// Conditions referenced by the stage's gates, in first-appearance order; a slot is an index.
    conditions: Vec<ConditionPlan>,
    gates: Vec<GatePlan>,
    /// Each entry packet's content digest: the payloads are part of the spec, so they are
    /// hashed once here rather than on every disclosure.
    packet_hashes: Vec<HashDigest>,
    /// The work of evaluating the stage apart from its evidence: its comparisons' weights and
    /// its gates' requirement nodes ([`Plan::work`]).
    weight: usize,
}

/// A compiled scenario.
#[derive(Debug)]
pub struct Plan {
    spec: Arc<ScenarioSpec>,
    spec_hash: HashDigest,
    algorithm: HashAlgorithm,
    stages: Vec<StagePlan>,
    stage_index: HashMap<StageId, usize>,
}

/// The gates of one stage, evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageOutcome {
    /// One record per gate, in stage order.
    pub gate_records: Vec<GateEvalRecord>,
}

impl StageOutcome {
    /// Each gate's id and status, in stage order.
    #[must_use]
    pub fn statuses(&self) -> Vec<(&GateId, TriState)> {
        self.gate_records
            .iter()
            .map(|r| (&r.evaluation.gate_id, r.evaluation.status))
            .collect()
    }
}

/// Reusable buffers for [`Plan::gate_outcomes`].
#[derive(Clone, Debug, Default)]
pub struct OutcomeBuffers {
    /// Each condition slot's status.
    pub statuses: Vec<TriState>,
    /// Each gate's outcome, in stage order.
    pub outcomes: Vec<TriState>,
    /// Every leaf visit of every gate, in order.
    pub trace: Vec<TraceStep>,
}

impl Plan {
    /// Compiles a spec. The spec must already have passed [`super::validate_spec`]; this only
    /// fails on structural problems (an unknown condition or stage), which for a stored spec
    /// means corruption.
    ///
    /// # Errors
    /// A [`SpecError`] naming the unresolvable reference, or a hashing failure.
    pub fn compile(spec: ScenarioSpec, algorithm: HashAlgorithm) -> Result<Self, SpecError> {
        if spec.stages.is_empty() {
            return Err(SpecError {
                path: "stages".into(),
                rule: "a scenario needs at least one stage".into(),
            });
        }
        let spec_hash = algorithm.digest_json(&spec).map_err(|e| SpecError {
            path: "$".into(),
            rule: e.to_string(),
        })?;
        let by_id: HashMap<&ConditionId, usize> = spec
            .conditions
            .iter()
            .enumerate()
            .map(|(i, c)| (&c.condition_id, i))
            .collect();
        let mut stages = Vec::with_capacity(spec.stages.len());
        for (si, stage) in spec.stages.iter().enumerate() {
            let mut conditions: Vec<ConditionPlan> = Vec::new();
            let mut slots: HashMap<ConditionId, u32> = HashMap::new();
            let mut gates = Vec::with_capacity(stage.gates.len());
            for (gi, gate) in stage.gates.iter().enumerate() {
                let mut slot_of = |id: &ConditionId| -> Option<u32> {
                    if let Some(slot) = slots.get(id) {
                        return Some(*slot);
                    }
                    let c = &spec.conditions[*by_id.get(id)?];
                    let slot = u32::try_from(conditions.len()).ok()?;
                    conditions.push(ConditionPlan {
                        id: c.condition_id.clone(),
                        query: c.query.clone(),
                        comparison: Comparison::new(c.comparator, c.expected.as_ref()),
                        trust: c.trust,
                    });
                    slots.insert(id.clone(), slot);
                    Some(slot)
                };
                let requirement = CompiledRequirement::compile(&gate.requirement, &mut slot_of)
                    .map_err(|id| SpecError {
                        path: format!("stages[{si}].gates[{gi}].requirement"),
                        rule: format!("unknown condition {id}"),
                    })?;
                let mut slots_by_id: Vec<u32> = Vec::new();
                gate.requirement.for_each_condition(&mut |id| {
                    if let Some(slot) = slots.get(id).copied().filter(|s| !slots_by_id.contains(s))
                    {
                        slots_by_id.push(slot);
                    }
                });
                slots_by_id.sort_by(|a, b| {
                    conditions[*a as usize]
                        .id
                        .as_str()
                        .cmp(conditions[*b as usize].id.as_str())
                });
                gates.push(GatePlan {
                    gate_id: gate.gate_id.clone(),
                    requirement,
                    trust: gate.trust,
                    slots_by_id,
                });
            }
            let packet_hashes = stage
                .entry_packets
                .iter()
                .enumerate()
                .map(|(pi, packet)| {
                    packet
                        .payload
                        .content_hash(algorithm)
                        .map_err(|e| SpecError {
                            path: format!("stages[{si}].entry_packets[{pi}].payload"),
                            rule: e.to_string(),
                        })
                })
                .collect::<Result<_, _>>()?;
            let weight = conditions
                .iter()
                .map(|c| c.comparison.weight())
                .chain(stage.gates.iter().map(|g| g.requirement.node_count()))
                .fold(0usize, usize::saturating_add);
            stages.push(StagePlan {
                conditions,
                gates,
                packet_hashes,
                weight,
            });
        }
        let stage_index = spec
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.stage_id.clone(), i))
            .collect();
        Ok(Self {
            spec: Arc::new(spec),
            spec_hash,
            algorithm,
            stages,
            stage_index,
        })
    }

    /// The spec.
    #[must_use]
    pub fn spec(&self) -> &ScenarioSpec {
        &self.spec
    }

    /// The spec's digest.
    #[must_use]
    pub fn spec_hash(&self) -> &HashDigest {
        &self.spec_hash
    }

    /// The content digests of `stage`'s entry packets, in spec order, as compiled: `None`
    /// when `algorithm` is not the plan's.
    #[must_use]
    pub fn packet_hashes(&self, stage: usize, algorithm: HashAlgorithm) -> Option<&[HashDigest]> {
        self.stages
            .get(stage)
            .filter(|_| algorithm == self.algorithm)
            .map(|s| s.packet_hashes.as_slice())
    }

    /// The work of evaluating `stage` from `results`, in items: the stage's own weight plus the
    /// items of the evidence (array items, or bytes / 64 for raw bytes). The service runs an
    /// evaluation over a budget off its async workers.
    #[must_use]
    pub fn work(&self, stage: usize, results: &[EvidenceResult]) -> usize {
        let evidence = results
            .iter()
            .map(|r| match &r.value {
                Some(EvidenceValue::Json(Value::Array(items))) => 1 + items.len(),
                Some(EvidenceValue::Bytes(bytes)) => 1 + bytes.len() / 64,
                _ => 1,
            })
            .fold(0usize, usize::saturating_add);
        self.stages
            .get(stage)
            .map_or(0, |s| s.weight)
            .saturating_add(evidence)
    }

    /// The most entry packets of any one stage: with a run's dispatch targets, the most
    /// disclosures one stage entry makes.
    #[must_use]
    pub fn most_entry_packets(&self) -> usize {
        self.stages
            .iter()
            .map(|s| s.packet_hashes.len())
            .max()
            .unwrap_or(0)
    }

    /// The position of a stage.
    #[must_use]
    pub fn stage_index(&self, stage_id: &StageId) -> Option<usize> {
        self.stage_index.get(stage_id).copied()
    }

    /// The conditions a stage's gates need, by slot.
    pub fn stage_conditions(
        &self,
        stage: usize,
    ) -> impl Iterator<Item = (&ConditionId, &EvidenceQuery)> {
        self.stages
            .get(stage)
            .into_iter()
            .flat_map(|s| s.conditions.iter().map(|c| (&c.id, &c.query)))
    }

    /// The slots of a stage in the order their providers are queried.
    #[must_use]
    pub fn query_order(&self, stage: usize, order: ConditionOrder) -> Vec<usize> {
        let Some(plan) = self.stages.get(stage) else {
            return Vec::new();
        };
        let mut slots: Vec<usize> = (0..plan.conditions.len()).collect();
        if let ConditionOrder::DeterministicShuffle { seed } = order {
            let key = |slot: &usize| {
                let id = plan.conditions[*slot].id.as_str();
                (
                    HashAlgorithm::Sha256
                        .digest(format!("{seed}:{id}").as_bytes())
                        .value,
                    id.to_owned(),
                )
            };
            slots.sort_by_cached_key(key);
        }
        slots
    }

    /// The decision's hot path, without normalising or recording: compares each slot's value
    /// (in slot order; `None` is no value), then evaluates every gate of the stage, appending
    /// each leaf visit to `trace`. `statuses` and `outcomes` are cleared and refilled, so a caller
    /// can reuse the buffers. Trust lanes and evidence errors are not considered here.
    pub fn gate_outcomes(
        &self,
        stage: usize,
        values: &[Option<&EvidenceValue>],
        mode: crate::ret::LogicMode,
        buffers: &mut OutcomeBuffers,
    ) {
        buffers.statuses.clear();
        buffers.outcomes.clear();
        buffers.trace.clear();
        let Some(plan) = self.stages.get(stage) else {
            return;
        };
        buffers.statuses.extend(
            plan.conditions
                .iter()
                .enumerate()
                .map(|(slot, c)| c.comparison.evaluate(values.get(slot).copied().flatten())),
        );
        for gate in &plan.gates {
            let outcome = gate
                .requirement
                .evaluate(&buffers.statuses, mode, &mut buffers.trace);
            buffers.outcomes.push(outcome);
        }
    }

    /// Evaluates a stage's gates from one provider result per slot (in slot order; a missing
    /// slot counts as no value). Results are normalised first: errors clear the value, the hash
    /// is recomputed, oversized values and failed anchors become errors, and trust lanes are
    /// applied per gate.
    #[must_use]
    pub fn evaluate_stage(
        &self,
        stage: usize,
        results: Vec<EvidenceResult>,
        config: &EngineConfig,
        trigger_id: &TriggerId,
    ) -> StageOutcome {
        let never = AtomicBool::new(false);
        self.evaluate_stage_until(stage, results, config, trigger_id, &never)
            .unwrap_or_else(|| unreachable!("an evaluation nobody stops runs to the end"))
    }

    /// As [`Self::evaluate_stage`], checking `stop` before each condition and each gate:
    /// `None` once it is set (the caller went away; nothing was decided).
    #[must_use]
    pub fn evaluate_stage_until(
        &self,
        stage: usize,
        results: Vec<EvidenceResult>,
        config: &EngineConfig,
        trigger_id: &TriggerId,
        stop: &AtomicBool,
    ) -> Option<StageOutcome> {
        let stopped = || stop.load(AtomicOrdering::Relaxed);
        let Some(plan) = self.stages.get(stage) else {
            return Some(StageOutcome {
                gate_records: Vec::new(),
            });
        };
        let mut results = results.into_iter();
        let mut normalised: Vec<(EvidenceResult, TriState)> =
            Vec::with_capacity(plan.conditions.len());
        for c in &plan.conditions {
            if stopped() {
                return None;
            }
            normalised.push(normalise(c, results.next(), config));
        }
        let base: Vec<TriState> = normalised.iter().map(|(_, s)| *s).collect();
        let stage_id = &self.spec.stages[stage].stage_id;

        let mut gate_records = Vec::with_capacity(plan.gates.len());
        let mut trace = Vec::new();
        for gate in &plan.gates {
            if stopped() {
                return None;
            }
            let gate_trust = config.trust.stricter(gate.trust.unwrap_or(config.trust));
            let lane_ok = |slot: u32| {
                let c = &plan.conditions[slot as usize];
                let provider = config
                    .provider_trust
                    .get(&c.query.provider_id)
                    .copied()
                    .unwrap_or(config.trust);
                let required = provider
                    .stricter(c.trust.unwrap_or(provider))
                    .stricter(gate_trust);
                (required.admits(normalised[slot as usize].0.lane), required)
            };
            let mut statuses = Cow::Borrowed(base.as_slice());
            for &slot in &gate.slots_by_id {
                if !lane_ok(slot).0 {
                    statuses.to_mut()[slot as usize] = TriState::Unknown;
                }
            }
            trace.clear();
            let status = gate
                .requirement
                .evaluate(&statuses, config.logic_mode, &mut trace);
            let evidence = gate
                .slots_by_id
                .iter()
                .map(|&slot| {
                    let (result, _) = &normalised[slot as usize];
                    let mut result = result.clone();
                    let (ok, required) = lane_ok(slot);
                    if !ok && result.error.is_none() {
                        result.error = Some(EvidenceError::new(
                            "trust_lane",
                            format!(
                                "evidence lane {:?} does not satisfy {:?}",
                                result.lane, required.min_lane
                            ),
                        ));
                    }
                    EvidenceRecord {
                        condition_id: plan.conditions[slot as usize].id.clone(),
                        status: statuses[slot as usize],
                        result,
                    }
                })
                .collect();
            gate_records.push(GateEvalRecord {
                trigger_id: trigger_id.clone(),
                stage_id: stage_id.clone(),
                evaluation: GateEvaluation {
                    gate_id: gate.gate_id.clone(),
                    status,
                    trace: trace
                        .iter()
                        .map(|TraceStep { slot, status }| GateTraceEntry {
                            condition_id: plan.conditions[*slot as usize].id.clone(),
                            status: *status,
                        })
                        .collect(),
                },
                evidence,
            });
        }
        Some(StageOutcome { gate_records })
    }
}

/// Normalises one provider answer and applies the comparator.
fn normalise(
    condition: &ConditionPlan,
    result: Option<EvidenceResult>,
    config: &EngineConfig,
) -> (EvidenceResult, TriState) {
    let result = result.unwrap_or_else(|| {
        EvidenceResult::failed(EvidenceError::new(
            "evidence_missing",
            "no answer was gathered for this condition",
        ))
    });
    let result = normalise_answer(&condition.query.provider_id, result, config);
    if result.error.is_some() {
        return (result, TriState::Unknown);
    }
    let status = condition.comparison.evaluate(result.value.as_ref());
    (result, status)
}

/// Checks a provider's answer against the anchor policy and recomputes its digest; an answer
/// that fails either (or carried an error) keeps only its error.
pub(crate) fn normalise_answer(
    provider_id: &ProviderId,
    mut result: EvidenceResult,
    config: &EngineConfig,
) -> EvidenceResult {
    if result.error.is_none()
        && let Some(requirement) = config.anchor_policy.get(provider_id)
        && let Err(message) = requirement.check(result.evidence_anchor.as_ref())
    {
        result = EvidenceResult::failed(EvidenceError::new("anchor_invalid", message));
    }
    if result.error.is_none() {
        match digest_value(result.value.as_ref(), config) {
            Ok(hash) => result.evidence_hash = hash,
            Err(e) => result.error = Some(e),
        }
    }
    if result.error.is_some() {
        result.value = None;
        result.evidence_hash = None;
        result.content_type = None;
    }
    result
}

/// The digest of an evidence value, refusing values over the evidence limit.
fn digest_value(
    value: Option<&EvidenceValue>,
    config: &EngineConfig,
) -> Result<Option<HashDigest>, EvidenceError> {
    let limit = config.limits.max_evidence_bytes;
    let too_large = |actual: usize| {
        EvidenceError::new(
            "evidence_too_large",
            format!("evidence value is {actual} bytes; the limit is {limit} bytes"),
        )
    };
    match value {
        None => Ok(None),
        Some(EvidenceValue::Bytes(bytes)) if bytes.len() > limit => Err(too_large(bytes.len())),
        Some(EvidenceValue::Bytes(bytes)) => Ok(Some(config.hash_algorithm.digest(bytes))),
        Some(EvidenceValue::Json(v)) => match canonical_json_limited(v, limit) {
            Ok(bytes) => Ok(Some(config.hash_algorithm.digest(&bytes))),
            Err(HashError::SizeLimitExceeded { actual, .. }) => Err(too_large(actual)),
            Err(e) => Err(EvidenceError::new("evidence_invalid", e.to_string())),
        },
    }
}
