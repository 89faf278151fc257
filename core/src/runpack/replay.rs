//! Replay: re-run every recorded trigger through the engine from the recorded evidence and
//! confirm every gate outcome and decision. Disclosure policies cannot be re-asked offline, so a
//! recorded disclosure refusal is accepted where the replay advances, provided it issued no
//! packet.

use std::collections::HashMap;

use crate::disclosure::PacketRecord;
use crate::engine::{EngineConfig, Plan, Verdict, decide, decide_timeout};
use crate::evidence::{EvidenceResult, TrustLane};
use crate::ids::{DecisionId, TriggerId};
use crate::run::{DecisionOutcome, DecisionRecord, GateEvalRecord, TriggerKind};
use crate::time::Timestamp;

use super::ARTIFACTS;
use super::verify::{Checks, Logs};

const SPEC: &str = ARTIFACTS[0].0;
const TRIGGERS: &str = ARTIFACTS[1].0;
const GATES: &str = ARTIFACTS[2].0;
const DECISIONS: &str = ARTIFACTS[3].0;
const PACKETS: &str = ARTIFACTS[4].0;

fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn verdict_json(plan: &Plan, stage: usize, verdict: &Verdict) -> String {
    let at = |i: usize| plan.spec().stages[i].stage_id.to_string();
    match verdict {
        Verdict::Advance { to, timeout } => {
            format!("advance {} -> {} (timeout {timeout})", at(stage), at(*to))
        }
        Verdict::Complete => format!("complete {}", at(stage)),
        Verdict::Hold(summary) => format!("hold {}", json(summary)),
        Verdict::Fail(reason) => format!("fail {reason:?}"),
    }
}

/// Checks that `packets` are exactly the entry packets of `stage`.
fn check_packets(
    plan: &Plan,
    stage: usize,
    packets: &[&PacketRecord],
    entry: &Option<String>,
    checks: &mut Checks,
) {
    let expected = &plan.spec().stages[stage].entry_packets;
    let matches = expected.len() == packets.len()
        && expected.iter().zip(packets).all(|(spec, issued)| {
            spec.packet_id == issued.envelope.packet_id
                && spec.payload == issued.payload
                && issued.envelope.stage_id == plan.spec().stages[stage].stage_id
        });
    if !matches {
        let ids: Vec<String> = packets
            .iter()
            .map(|p| p.envelope.packet_id.to_string())
            .collect();
        let want: Vec<String> = expected.iter().map(|p| p.packet_id.to_string()).collect();
        checks.fail(
            "replay",
            PACKETS,
            entry.clone(),
            format!("issued {ids:?}, the stage discloses {want:?}"),
        );
    }
}

pub(crate) fn replay(logs: &Logs, config: &EngineConfig, checks: &mut Checks) {
    if logs.spec.stages.is_empty() {
        return checks.fail("replay", SPEC, None, "the spec has no stages");
    }
    let plan = match Plan::compile(logs.spec.clone(), config.hash_algorithm) {
        Ok(plan) => plan,
        Err(e) => {
            return checks.fail(
                "replay",
                SPEC,
                None,
                format!("the spec does not compile: {e}"),
            );
        }
    };
    let decisions: HashMap<&TriggerId, &DecisionRecord> =
        logs.decisions.iter().map(|d| (&d.trigger_id, d)).collect();
    let mut gates: HashMap<&TriggerId, Vec<&GateEvalRecord>> = HashMap::new();
    for g in &logs.gate_evals {
        gates.entry(&g.trigger_id).or_default().push(g);
    }
    let mut packets: HashMap<&DecisionId, Vec<&PacketRecord>> = HashMap::new();
    for p in &logs.packets {
        packets.entry(&p.decision_id).or_default().push(p);
    }

    let mut stage = 0;
    let mut entered_at: Option<Timestamp> = None;
    let mut active = true;
    for (i, trigger) in logs.triggers.iter().enumerate() {
        let tid = &trigger.event.trigger_id;
        let Some(decision) = decisions.get(tid) else {
            checks.fail(
                "replay",
                DECISIONS,
                Some(format!("trigger {tid}")),
                "no decision recorded for this trigger",
            );
            continue;
        };
        let entry = Some(decision.decision_id.to_string());
        let issued = packets
            .get(&decision.decision_id)
            .cloned()
            .unwrap_or_default();
        let recorded_gates = gates.get(tid).cloned().unwrap_or_default();
        let current = plan.spec().stages[stage].stage_id.clone();
        if i == 0 {
            if decision.outcome
                != (DecisionOutcome::Start {
                    stage_id: current.clone(),
                })
            {
                checks.fail(
                    "replay",
                    DECISIONS,
                    entry.clone(),
                    format!(
                        "the first decision must start in {current}, recorded {}",
                        json(&decision.outcome)
                    ),
                );
            }
            check_packets(&plan, 0, &issued, &entry, checks);
            entered_at = Some(trigger.event.time);
            continue;
        }
        if !active {
            checks.fail(
                "replay",
                TRIGGERS,
                Some(format!("trigger {tid}")),
                "a trigger was recorded after the run ended",
            );
            continue;
        }
        if decision.stage_id != current {
            checks.fail(
                "replay",
                DECISIONS,
                entry.clone(),
                format!(
                    "decided in stage {}, the replay is in {current}",
                    decision.stage_id
                ),
            );
        }
        let stage_spec = &plan.spec().stages[stage];
        let deadline = stage_spec
            .timeout
            .as_ref()
            .and_then(|t| entered_at?.checked_add_millis(t.timeout_ms));
        let timed_out = trigger.event.kind == TriggerKind::Tick
            && deadline
                .and_then(|d| trigger.event.time.at_or_after(d))
                .unwrap_or(false);
        let verdict = if timed_out {
            if !recorded_gates.is_empty() {
                checks.fail(
                    "replay",
                    GATES,
                    Some(format!("trigger {tid}")),
                    "gates were evaluated although the stage had timed out",
                );
            }
            decide_timeout(&plan, stage, stage_spec.on_timeout)
        } else {
            let mut results = Vec::new();
            for (condition, _) in plan.stage_conditions(stage) {
                let recorded = recorded_gates
                    .iter()
                    .flat_map(|g| &g.evidence)
                    .find(|e| &e.condition_id == condition);
                match recorded {
                    Some(e) => {
                        let mut result = e.result.clone();
                        // The trust-lane error is added per gate on top of a clean answer.
                        if result
                            .error
                            .as_ref()
                            .is_some_and(|err| err.code == "trust_lane")
                        {
                            result.error = None;
                        }
                        results.push(result);
                    }
                    None => {
                        checks.fail(
                            "replay",
                            GATES,
                            Some(format!("trigger {tid}")),
                            format!("no evidence recorded for condition {condition}"),
                        );
                        results.push(EvidenceResult::empty(TrustLane::Verified));
                    }
                }
            }
            let outcome = plan.evaluate_stage(stage, results, config, tid);
            if outcome.gate_records.len() != recorded_gates.len() {
                checks.fail(
                    "replay",
                    GATES,
                    Some(format!("trigger {tid}")),
                    format!(
                        "{} gate evaluations recorded, the stage has {}",
                        recorded_gates.len(),
                        outcome.gate_records.len()
                    ),
                );
            }
            for (replayed, recorded) in outcome.gate_records.iter().zip(&recorded_gates) {
                if replayed.evaluation != recorded.evaluation {
                    checks.fail(
                        "replay",
                        GATES,
                        Some(format!(
                            "gate {} (trigger {tid})",
                            recorded.evaluation.gate_id
                        )),
                        format!(
                            "recorded {}, the replay gives {}",
                            json(&recorded.evaluation),
                            json(&replayed.evaluation)
                        ),
                    );
                }
            }
            decide(&plan, stage, &outcome.statuses())
        };

        let agrees = match (&verdict, &decision.outcome) {
            (
                Verdict::Advance { to, timeout },
                DecisionOutcome::Advance {
                    from_stage,
                    to_stage,
                    timeout: recorded,
                },
            ) => {
                *from_stage == current
                    && *to_stage == plan.spec().stages[*to].stage_id
                    && timeout == recorded
            }
            (Verdict::Advance { .. }, DecisionOutcome::Fail { reason }) => {
                reason != "timeout" && issued.is_empty()
            }
            (Verdict::Complete, DecisionOutcome::Complete { stage_id }) => *stage_id == current,
            (Verdict::Hold(summary), DecisionOutcome::Hold { summary: recorded }) => {
                summary == recorded
            }
            (Verdict::Fail(reason), DecisionOutcome::Fail { reason: recorded }) => {
                reason == recorded
            }
            _ => false,
        };
        if !agrees {
            checks.fail(
                "replay",
                DECISIONS,
                entry.clone(),
                format!(
                    "recorded {}, the replay decides {}",
                    json(&decision.outcome),
                    verdict_json(&plan, stage, &verdict)
                ),
            );
        }
        // Follow the recorded outcome, so one bad entry is reported once.
        match &decision.outcome {
            DecisionOutcome::Advance { to_stage, .. } => match plan.stage_index(to_stage) {
                Some(next) => {
                    check_packets(&plan, next, &issued, &entry, checks);
                    stage = next;
                    entered_at = Some(trigger.event.time);
                }
                None => {
                    checks.fail(
                        "replay",
                        DECISIONS,
                        entry.clone(),
                        format!("advances to unknown stage {to_stage}"),
                    );
                    active = false;
                }
            },
            DecisionOutcome::Complete { .. } | DecisionOutcome::Fail { .. } => active = false,
            DecisionOutcome::Hold { .. } | DecisionOutcome::Start { .. } => {}
        }
    }
}
