//! Replay: re-run every recorded trigger through the engine's one transition
//! ([`crate::engine::transition`], the code the live step runs) from the recorded evidence and
//! confirm every gate outcome and decision. Disclosure policies cannot be re-asked offline, so a
//! recorded disclosure refusal is accepted where the replay advances, provided it issued no
//! packet.

use std::collections::HashMap;

use crate::disclosure::PacketRecord;
use crate::engine::transition::{self, Begun};
use crate::engine::{EngineConfig, Plan, Verdict};
use crate::evidence::{EvidenceResult, TrustLane};
use crate::ids::{DecisionId, TriggerId};
use crate::run::{DecisionOutcome, DecisionRecord, GateEvalRecord, RunKey, RunStatus};

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

/// The stage's evidence as the trigger recorded it, one result per condition slot.
fn recorded_results(
    plan: &Plan,
    stage: usize,
    recorded_gates: &[&GateEvalRecord],
    tid: &TriggerId,
    checks: &mut Checks,
) -> Vec<EvidenceResult> {
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
    results
}

/// Checks the replayed gate evaluations against the recorded ones.
fn check_gates(
    replayed: &[GateEvalRecord],
    recorded_gates: &[&GateEvalRecord],
    tid: &TriggerId,
    checks: &mut Checks,
) {
    if replayed.len() != recorded_gates.len() {
        checks.fail(
            "replay",
            GATES,
            Some(format!("trigger {tid}")),
            format!(
                "{} gate evaluations recorded, the stage has {}",
                recorded_gates.len(),
                replayed.len()
            ),
        );
    }
    for (replayed, recorded) in replayed.iter().zip(recorded_gates) {
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

    // The run's head, rebuilt as the live path built it: the start transition of the first
    // trigger, then each recorded decision followed. Dispatch targets and packets only matter
    // to disclosure, which replay takes from the record (the packets are checked against the
    // spec), so the head gets none and copies no payload.
    let Some(first) = logs.triggers.first() else {
        return;
    };
    let key = RunKey {
        tenant_id: first.event.tenant_id,
        namespace_id: first.event.namespace_id,
        run_id: first.event.run_id.clone(),
    };
    let started = transition::start(
        &plan,
        key,
        logs.spec.scenario_id.clone(),
        Vec::new(),
        &first.event,
        Vec::new(),
    );
    let start_outcome = started.decision.outcome;
    let mut head = started.head;
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
        let current = head.current_stage_id.clone();
        if i == 0 {
            if decision.outcome != start_outcome {
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
        let decided = match transition::begin(&plan, &head, &trigger.event) {
            Ok(Begun::TimedOut(decided)) => {
                if !recorded_gates.is_empty() {
                    checks.fail(
                        "replay",
                        GATES,
                        Some(format!("trigger {tid}")),
                        "gates were evaluated although the stage had timed out",
                    );
                }
                decided
            }
            Ok(Begun::Evaluate(pending)) => {
                let results =
                    recorded_results(&plan, pending.stage(), &recorded_gates, tid, checks);
                let decided = pending.decide(&plan, results, config, tid);
                check_gates(decided.gate_evals(), &recorded_gates, tid, checks);
                decided
            }
            Err(e) => {
                // The live step refuses such a trigger, so no run records one.
                checks.fail(
                    "replay",
                    TRIGGERS,
                    Some(format!("trigger {tid}")),
                    e.to_string(),
                );
                continue;
            }
        };
        let stage = decided.stage();
        let verdict = decided.verdict().clone();
        // A recorded failure of an advance that issued no packet stands for a refused
        // disclosure (`timeout` is never a disclosure's reason).
        let refusal = match (decided.discloses(), &decision.outcome) {
            (Some(_), DecisionOutcome::Fail { reason })
                if reason != "timeout" && issued.is_empty() =>
            {
                Some(reason.clone())
            }
            _ => None,
        };
        if decided.outcome(&plan, refusal) != decision.outcome {
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
        if let DecisionOutcome::Advance { to_stage, .. } = &decision.outcome {
            let Some(next) = plan.stage_index(to_stage) else {
                checks.fail(
                    "replay",
                    DECISIONS,
                    entry.clone(),
                    format!("advances to unknown stage {to_stage}"),
                );
                active = false;
                continue;
            };
            check_packets(&plan, next, &issued, &entry, checks);
        }
        transition::follow(&mut head, &trigger.event, (*decision).clone(), issued.len());
        active = head.status == RunStatus::Active;
    }
}
