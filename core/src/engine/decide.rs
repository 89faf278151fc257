//! Decisions: what a stage's gate outcomes (or its timeout) mean for the run, and the disclosure
//! of the next stage's packets.

use crate::disclosure::{
    DispatchTarget, Dispatcher, PacketEnvelope, PacketRecord, PacketVisibility, PolicyDecider,
    PolicyDecision,
};
use crate::hashing::HashAlgorithm;
use crate::ids::{CorrelationId, DecisionId, GateId, RunId};
use crate::ret::{GateOutcome, TriState};
use crate::run::SafeSummary;
use crate::spec::{AdvanceTo, TimeoutPolicy};
use crate::time::Timestamp;

use super::Plan;

/// What a stage's evaluation decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Enter the stage at this index.
    Advance {
        /// The stage to enter.
        to: usize,
        /// Whether a timeout forced it.
        timeout: bool,
    },
    /// The run completes.
    Complete,
    /// The run stays.
    Hold(SafeSummary),
    /// The run fails.
    Fail(String),
}

fn hold(unmet: Vec<GateId>, hint: &str) -> Verdict {
    Verdict::Hold(SafeSummary {
        status: "hold".into(),
        unmet_gates: unmet,
        retry_hint: hint.into(),
        policy_tags: Vec::new(),
    })
}

/// Where a passing stage goes when it does not branch: `Some(index)` or `None` to complete.
fn next_stage(plan: &Plan, stage: usize) -> Option<Option<usize>> {
    let spec = plan.spec();
    match &spec.stages.get(stage)?.advance_to {
        AdvanceTo::Linear => Some((stage + 1 < spec.stages.len()).then_some(stage + 1)),
        AdvanceTo::Fixed { stage_id } => Some(plan.stage_index(stage_id)),
        AdvanceTo::Terminal | AdvanceTo::Branch { .. } => Some(None),
    }
}

/// The first branch rule whose gate has its named outcome.
fn matching_rule(
    plan: &Plan,
    stage: usize,
    outcome_of: impl Fn(&GateId) -> TriState,
) -> Option<usize> {
    let AdvanceTo::Branch { branches, .. } = &plan.spec().stages.get(stage)?.advance_to else {
        return None;
    };
    branches
        .iter()
        .find(|rule| GateOutcome::from(outcome_of(&rule.gate_id)) == rule.outcome)
        .and_then(|rule| plan.stage_index(&rule.next_stage_id))
}

fn branch_default(plan: &Plan, stage: usize) -> Option<usize> {
    match &plan.spec().stages.get(stage)?.advance_to {
        AdvanceTo::Branch {
            default: Some(d), ..
        } => plan.stage_index(d),
        _ => None,
    }
}

fn is_branch(plan: &Plan, stage: usize) -> bool {
    plan.spec()
        .stages
        .get(stage)
        .is_some_and(|s| matches!(s.advance_to, AdvanceTo::Branch { .. }))
}

/// Decides a stage from its gates' statuses (in stage order).
///
/// A branch stage tries its rules in order against the outcomes (true, false and unknown can all
/// route); with no match it takes `default` when every gate is true, and otherwise holds. Any
/// other stage advances (or completes) when every gate is true — a stage without gates passes —
/// and otherwise holds, naming the unmet gates.
#[must_use]
pub fn decide(plan: &Plan, stage: usize, statuses: &[(&GateId, TriState)]) -> Verdict {
    let unmet: Vec<GateId> = statuses
        .iter()
        .filter(|(_, s)| *s != TriState::True)
        .map(|(g, _)| (*g).clone())
        .collect();
    if is_branch(plan, stage) {
        let outcome_of = |gate: &GateId| {
            statuses
                .iter()
                .find(|(g, _)| *g == gate)
                .map_or(TriState::Unknown, |(_, s)| *s)
        };
        if let Some(to) = matching_rule(plan, stage, outcome_of) {
            return Verdict::Advance { to, timeout: false };
        }
        return match (unmet.is_empty(), branch_default(plan, stage)) {
            (true, Some(to)) => Verdict::Advance { to, timeout: false },
            (true, None) => hold(unmet, "no_branch_matched"),
            (false, _) => hold(unmet, "await_evidence"),
        };
    }
    if !unmet.is_empty() {
        return hold(unmet, "await_evidence");
    }
    match next_stage(plan, stage) {
        Some(Some(to)) => Verdict::Advance { to, timeout: false },
        _ => Verdict::Complete,
    }
}

/// Decides a stage whose timeout has passed, without evaluating its gates.
///
/// `fail` fails the run. `advance_with_flag` treats every gate as true; `alternate_branch`
/// treats every gate as unknown and routes through the rules, then `default`. A timed-out stage
/// that cannot route anywhere fails with reason `timeout`: it never holds past its deadline.
#[must_use]
pub fn decide_timeout(plan: &Plan, stage: usize, policy: TimeoutPolicy) -> Verdict {
    let synthetic = match policy {
        TimeoutPolicy::Fail => return Verdict::Fail("timeout".into()),
        TimeoutPolicy::AdvanceWithFlag => TriState::True,
        TimeoutPolicy::AlternateBranch => TriState::Unknown,
    };
    if is_branch(plan, stage) {
        return matching_rule(plan, stage, |_| synthetic)
            .or_else(|| branch_default(plan, stage))
            .map_or_else(
                || Verdict::Fail("timeout".into()),
                |to| Verdict::Advance { to, timeout: true },
            );
    }
    match next_stage(plan, stage) {
        Some(Some(to)) => Verdict::Advance { to, timeout: true },
        _ => Verdict::Complete,
    }
}

/// Who a disclosure is for and when.
#[derive(Clone, Copy, Debug)]
pub struct DisclosureContext<'a> {
    /// The run.
    pub run_id: &'a RunId,
    /// The deciding decision.
    pub decision_id: &'a DecisionId,
    /// The decision's time.
    pub issued_at: Timestamp,
    /// The decision's correlation id.
    pub correlation_id: Option<&'a CorrelationId>,
    /// Where to deliver.
    pub targets: &'a [DispatchTarget],
}

/// Why a disclosure did not happen; the run fails with `reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisclosureFailure {
    /// True when the policy refused (as opposed to a policy or dispatch error).
    pub denied: bool,
    /// The failure reason, such as `policy denied disclosure`.
    pub reason: String,
}

impl DisclosureFailure {
    fn error(reason: String) -> Self {
        Self {
            denied: false,
            reason,
        }
    }
}

/// Issues the entry packets of `stage`: builds each envelope, asks the policy for every target,
/// and dispatches. Any denial or failure returns the reason the run fails with, and no packet is
/// recorded.
///
/// # Errors
/// A [`DisclosureFailure`] carrying the reason the run fails with.
pub async fn issue_packets(
    plan: &Plan,
    stage: usize,
    ctx: DisclosureContext<'_>,
    algorithm: HashAlgorithm,
    policy: &dyn PolicyDecider,
    dispatcher: &dyn Dispatcher,
) -> Result<Vec<PacketRecord>, DisclosureFailure> {
    let spec = plan.spec();
    let Some(stage_spec) = spec.stages.get(stage) else {
        return Ok(Vec::new());
    };
    let mut envelopes = Vec::with_capacity(stage_spec.entry_packets.len());
    let compiled = plan.packet_hashes(stage, algorithm);
    for (i, packet) in stage_spec.entry_packets.iter().enumerate() {
        let content_hash = match compiled.and_then(|hashes| hashes.get(i)) {
            Some(hash) => hash.clone(),
            None => packet
                .payload
                .content_hash(algorithm)
                .map_err(|e| DisclosureFailure::error(e.to_string()))?,
        };
        envelopes.push(PacketEnvelope {
            scenario_id: spec.scenario_id.clone(),
            run_id: ctx.run_id.clone(),
            stage_id: stage_spec.stage_id.clone(),
            packet_id: packet.packet_id.clone(),
            schema_id: packet.schema_id.clone(),
            content_type: packet.content_type.clone(),
            content_hash,
            visibility: PacketVisibility {
                labels: packet.visibility_labels.clone(),
                policy_tags: packet.policy_tags.clone(),
            },
            expiry: packet.expiry,
            correlation_id: ctx.correlation_id.cloned(),
            issued_at: ctx.issued_at,
        });
    }
    // Every (packet, target) pair is permitted before anything is delivered, so a refusal
    // never leaves a partial, unrecorded disclosure behind.
    for envelope in &envelopes {
        for target in ctx.targets {
            match policy
                .decide(target, envelope)
                .await
                .map_err(|e| DisclosureFailure::error(format!("policy error: {e}")))?
            {
                PolicyDecision::Permit => {}
                PolicyDecision::Deny => {
                    return Err(DisclosureFailure {
                        denied: true,
                        reason: "policy denied disclosure".into(),
                    });
                }
            }
        }
    }
    let mut records = Vec::with_capacity(envelopes.len());
    for (packet, envelope) in stage_spec.entry_packets.iter().zip(envelopes) {
        let mut receipts = Vec::with_capacity(ctx.targets.len());
        for target in ctx.targets {
            let receipt = dispatcher
                .dispatch(target, &envelope, &packet.payload)
                .await;
            receipts.push(
                receipt.map_err(|e| DisclosureFailure::error(format!("dispatch failed: {e}")))?,
            );
        }
        records.push(PacketRecord {
            envelope,
            payload: packet.payload.clone(),
            receipts,
            decision_id: ctx.decision_id.clone(),
        });
    }
    Ok(records)
}
