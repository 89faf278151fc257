//! One transition: every rule of what a trigger does to a run, as pure functions that both the
//! live step ([`crate::service`]) and runpack replay ([`crate::runpack`]) call, so a recorded
//! run is re-decided by the very code that decided it.
//!
//! Disclosure (the policy and the dispatcher) is the one I/O of a step, so a step is two pure
//! halves around it:
//!
//! 1. [`begin`] finds the run's stage and applies the stage timeout: a tick at or after the
//!    deadline is decided by `on_timeout` at once, and no evidence is gathered. Otherwise the
//!    caller gathers the stage's evidence (the providers live, the recorded evidence in replay)
//!    and [`Pending::decide`] evaluates the gates into a verdict.
//! 2. The caller discloses the entered stage's packets ([`Decided::discloses`]) with
//!    [`super::issue_packets`] (live) or takes the recorded disclosure (replay).
//! 3. [`apply`] makes the decision: its outcome ([`outcome`]: a failed disclosure turns an
//!    advance into a fail) and the next head ([`follow`]). [`Transition::into_entry`] makes the
//!    journal entry.
//!
//! A run's first entry is [`start`].

use std::sync::atomic::AtomicBool;

use crate::disclosure::{DispatchTarget, PacketRecord};
use crate::evidence::EvidenceResult;
use crate::ids::{DecisionId, ScenarioId, StageId, TriggerId};
use crate::run::{
    DecisionOutcome, DecisionRecord, EntryBody, GateEvalRecord, JournalEntry, RunCounts, RunHead,
    RunKey, RunStatus, ToolCallRecord, TriggerEntry, TriggerEvent, TriggerKind, TriggerRecord,
    TriggerResult,
};

use super::{DisclosureFailure, EngineConfig, Plan, Verdict, decide, decide_timeout};

/// Why a trigger cannot be decided; nothing is recorded for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The head names a stage the plan does not have.
    #[error("the run is in unknown stage {0}")]
    UnknownStage(StageId),
    /// The stage's deadline does not fit the timestamp range.
    #[error("stage deadline overflows the timestamp range")]
    DeadlineOverflow,
}

/// The first half of a step, before any evidence.
#[derive(Debug)]
pub enum Begun {
    /// The stage's deadline has passed: decided by its `on_timeout`, without gates.
    TimedOut(Decided),
    /// The gates decide: gather the stage's evidence and call [`Pending::decide`].
    Evaluate(Pending),
}

/// A step whose gates are still to be evaluated.
#[derive(Debug)]
pub struct Pending {
    stage: usize,
    seq: u64,
    decision_id: DecisionId,
}

/// What a step decided before disclosure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    stage: usize,
    seq: u64,
    decision_id: DecisionId,
    verdict: Verdict,
    gate_evals: Vec<GateEvalRecord>,
}

/// A decided step: the run's next head and what its journal entry records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The run's next head. Its tool-call counter moves in [`Self::into_entry`], which is told
    /// whether a call carried the trigger.
    pub head: RunHead,
    /// The decision.
    pub decision: DecisionRecord,
    /// One evaluation per gate of the stage (empty when a timeout or the start decided).
    pub gate_evals: Vec<GateEvalRecord>,
    /// The packets the decision disclosed.
    pub packets: Vec<PacketRecord>,
}

/// The start decision's id; the caller discloses the first stage's packets under it.
#[must_use]
pub fn first_decision_id() -> DecisionId {
    DecisionId::for_seq(1)
}

/// A run's first transition: the start trigger `event` decides `start` in the first stage and
/// records that stage's entry `packets`, disclosed by the caller under [`first_decision_id`].
///
/// # Panics
/// When the plan has no stage; a validated spec always has one.
#[must_use]
pub fn start(
    plan: &Plan,
    key: RunKey,
    scenario_id: ScenarioId,
    dispatch_targets: Vec<DispatchTarget>,
    event: &TriggerEvent,
    packets: Vec<PacketRecord>,
) -> Transition {
    let first = plan.spec().stages[0].stage_id.clone();
    let decision = DecisionRecord {
        decision_id: first_decision_id(),
        seq: 1,
        trigger_id: event.trigger_id.clone(),
        stage_id: first.clone(),
        decided_at: event.time,
        outcome: DecisionOutcome::Start {
            stage_id: first.clone(),
        },
        correlation_id: event.correlation_id.clone(),
    };
    let head = RunHead {
        key,
        scenario_id,
        spec_hash: plan.spec_hash().clone(),
        current_stage_id: first,
        stage_entered_at: event.time,
        status: RunStatus::Active,
        dispatch_targets,
        revision: 1,
        counts: RunCounts {
            triggers: 1,
            decisions: 1,
            packets: packets.len() as u64,
            submissions: 0,
            tool_calls: 0,
        },
        last_decision: decision.clone(),
    };
    Transition {
        head,
        decision,
        gate_evals: Vec::new(),
        packets,
    }
}

/// Starts a step of an active run: finds its stage and applies the stage timeout. Timeouts
/// apply only to ticks, at or after `stage_entered_at + timeout_ms`; a time of another kind
/// than the run's never reaches the deadline.
///
/// # Errors
/// [`TransitionError::UnknownStage`] when the head's stage is not in the plan,
/// [`TransitionError::DeadlineOverflow`] for a tick on a stage whose deadline overflows.
pub fn begin(plan: &Plan, head: &RunHead, event: &TriggerEvent) -> Result<Begun, TransitionError> {
    let stage = plan
        .stage_index(&head.current_stage_id)
        .ok_or_else(|| TransitionError::UnknownStage(head.current_stage_id.clone()))?;
    let seq = head.counts.decisions + 1;
    let pending = Pending {
        stage,
        seq,
        decision_id: DecisionId::for_seq(seq),
    };
    let stage_spec = &plan.spec().stages[stage];
    let timed_out = match (&stage_spec.timeout, event.kind) {
        (Some(timeout), TriggerKind::Tick) => {
            let deadline = head
                .stage_entered_at
                .checked_add_millis(timeout.timeout_ms)
                .ok_or(TransitionError::DeadlineOverflow)?;
            event.time.at_or_after(deadline).unwrap_or(false)
        }
        _ => false,
    };
    Ok(if timed_out {
        let verdict = decide_timeout(plan, stage, stage_spec.on_timeout);
        Begun::TimedOut(pending.finish(verdict, Vec::new()))
    } else {
        Begun::Evaluate(pending)
    })
}

impl Pending {
    /// The stage whose evidence to gather.
    #[must_use]
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// Evaluates the stage's gates from one result per condition slot (see [`evaluate`]).
    #[must_use]
    pub fn decide(
        self,
        plan: &Plan,
        results: Vec<EvidenceResult>,
        config: &EngineConfig,
        trigger_id: &TriggerId,
    ) -> Decided {
        let (verdict, gate_evals) = evaluate(plan, self.stage, results, config, trigger_id);
        self.finish(verdict, gate_evals)
    }

    /// As [`Self::decide`], `None` once `stop` is set (see [`evaluate_until`]).
    #[must_use]
    pub fn decide_until(
        self,
        plan: &Plan,
        results: Vec<EvidenceResult>,
        config: &EngineConfig,
        trigger_id: &TriggerId,
        stop: &AtomicBool,
    ) -> Option<Decided> {
        let (verdict, gate_evals) =
            evaluate_until(plan, self.stage, results, config, trigger_id, stop)?;
        Some(self.finish(verdict, gate_evals))
    }

    fn finish(self, verdict: Verdict, gate_evals: Vec<GateEvalRecord>) -> Decided {
        Decided {
            stage: self.stage,
            seq: self.seq,
            decision_id: self.decision_id,
            verdict,
            gate_evals,
        }
    }
}

/// Evaluates `stage`'s gates from one result per condition slot, in slot order, and decides the
/// stage from their statuses.
#[must_use]
pub fn evaluate(
    plan: &Plan,
    stage: usize,
    results: Vec<EvidenceResult>,
    config: &EngineConfig,
    trigger_id: &TriggerId,
) -> (Verdict, Vec<GateEvalRecord>) {
    verdict_of(
        plan,
        stage,
        plan.evaluate_stage(stage, results, config, trigger_id),
    )
}

/// As [`evaluate`], checking `stop` before each condition and gate: `None` once it is set.
#[must_use]
pub fn evaluate_until(
    plan: &Plan,
    stage: usize,
    results: Vec<EvidenceResult>,
    config: &EngineConfig,
    trigger_id: &TriggerId,
    stop: &AtomicBool,
) -> Option<(Verdict, Vec<GateEvalRecord>)> {
    let outcome = plan.evaluate_stage_until(stage, results, config, trigger_id, stop)?;
    Some(verdict_of(plan, stage, outcome))
}

/// The stage's verdict from its evaluated gates, with their records.
fn verdict_of(
    plan: &Plan,
    stage: usize,
    outcome: super::StageOutcome,
) -> (Verdict, Vec<GateEvalRecord>) {
    let verdict = decide(plan, stage, &outcome.statuses());
    (verdict, outcome.gate_records)
}

impl Decided {
    /// The stage decided in.
    #[must_use]
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// The decision's id, which disclosed packets carry.
    #[must_use]
    pub fn decision_id(&self) -> &DecisionId {
        &self.decision_id
    }

    /// The verdict of the gates or the timeout.
    #[must_use]
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// One evaluation per gate, in stage order (empty when a timeout decided).
    #[must_use]
    pub fn gate_evals(&self) -> &[GateEvalRecord] {
        &self.gate_evals
    }

    /// The stage whose entry packets must be disclosed before [`apply`]: the one an advance
    /// enters. Other verdicts disclose nothing.
    #[must_use]
    pub fn discloses(&self) -> Option<usize> {
        match self.verdict {
            Verdict::Advance { to, .. } => Some(to),
            _ => None,
        }
    }

    /// The decision's outcome (see [`outcome`]).
    #[must_use]
    pub fn outcome(self, plan: &Plan, refusal: Option<String>) -> DecisionOutcome {
        outcome(plan, self.stage, self.verdict, refusal)
    }
}

/// The outcome of `verdict` in `stage`. An advance whose disclosure failed (`refusal`, its
/// reason) fails the run with that reason; other verdicts disclose nothing and ignore it.
#[must_use]
pub fn outcome(
    plan: &Plan,
    stage: usize,
    verdict: Verdict,
    refusal: Option<String>,
) -> DecisionOutcome {
    let stage_id = |i: usize| plan.spec().stages[i].stage_id.clone();
    match verdict {
        Verdict::Advance { to, timeout } => match refusal {
            None => DecisionOutcome::Advance {
                from_stage: stage_id(stage),
                to_stage: stage_id(to),
                timeout,
            },
            Some(reason) => DecisionOutcome::Fail { reason },
        },
        Verdict::Complete => DecisionOutcome::Complete {
            stage_id: stage_id(stage),
        },
        Verdict::Hold(summary) => DecisionOutcome::Hold { summary },
        Verdict::Fail(reason) => DecisionOutcome::Fail { reason },
    }
}

/// Completes a step with its disclosure: `Ok` with the packets issued (empty when
/// [`Decided::discloses`] is `None`), or the failure that fails the run, recording no packet.
#[must_use]
pub fn apply(
    plan: &Plan,
    mut head: RunHead,
    decided: Decided,
    disclosure: Result<Vec<PacketRecord>, DisclosureFailure>,
    event: &TriggerEvent,
) -> Transition {
    debug_assert!(
        decided.discloses().is_some() || disclosure.as_ref().is_ok_and(Vec::is_empty),
        "only an advance discloses"
    );
    let (packets, refusal) = match disclosure {
        Ok(packets) => (packets, None),
        Err(failure) => (Vec::new(), Some(failure.reason)),
    };
    let decision = DecisionRecord {
        decision_id: decided.decision_id,
        seq: decided.seq,
        trigger_id: event.trigger_id.clone(),
        stage_id: head.current_stage_id.clone(),
        decided_at: event.time,
        outcome: outcome(plan, decided.stage, decided.verdict, refusal),
        correlation_id: event.correlation_id.clone(),
    };
    follow(&mut head, event, decision.clone(), packets.len());
    Transition {
        head,
        decision,
        gate_evals: decided.gate_evals,
        packets,
    }
}

/// Moves `head` past `decision` on trigger `event`, which disclosed `packets` packets: an
/// advance enters its stage at the trigger's time, a completion or a failure ends the run, a
/// hold stays; the revision and the trigger, decision and packet counters move by one entry.
/// Replay follows each recorded decision with it.
pub fn follow(head: &mut RunHead, event: &TriggerEvent, decision: DecisionRecord, packets: usize) {
    match &decision.outcome {
        DecisionOutcome::Advance { to_stage, .. } => {
            head.current_stage_id = to_stage.clone();
            head.stage_entered_at = event.time;
        }
        DecisionOutcome::Complete { .. } => head.status = RunStatus::Completed,
        DecisionOutcome::Fail { .. } => head.status = RunStatus::Failed,
        DecisionOutcome::Hold { .. } | DecisionOutcome::Start { .. } => {}
    }
    head.revision += 1;
    head.counts.triggers += 1;
    head.counts.decisions += 1;
    head.counts.packets += packets as u64;
    head.last_decision = decision;
}

impl Transition {
    /// The trigger's answer: the decision, its packets and the run's status after it.
    #[must_use]
    pub fn result(&self) -> TriggerResult {
        TriggerResult {
            decision: self.decision.clone(),
            packets: self.packets.clone(),
            status: self.head.status,
        }
    }

    /// The next head and the one journal entry that records `event` at its revision.
    /// `tool_call` is the call that carried the trigger (none for the start trigger); it counts
    /// on the head.
    #[must_use]
    pub fn into_entry(
        self,
        event: TriggerEvent,
        tool_call: Option<ToolCallRecord>,
    ) -> (RunHead, JournalEntry) {
        let mut head = self.head;
        if tool_call.is_some() {
            head.counts.tool_calls += 1;
        }
        let entry = JournalEntry {
            revision: head.revision,
            body: EntryBody::Trigger(Box::new(TriggerEntry {
                trigger: TriggerRecord {
                    seq: head.counts.triggers,
                    event,
                },
                gate_evals: self.gate_evals,
                decision: self.decision,
                packets: self.packets,
                tool_call,
            })),
        };
        (head, entry)
    }
}

#[cfg(test)]
mod tests {
    //! Each rule of the transition, on the pure functions alone.

    use serde_json::{Value, json};

    use super::*;
    use crate::disclosure::{RecordingDispatcher, StaticPolicy};
    use crate::engine::{DisclosureContext, Limits, from_json_value, issue_packets, validate_spec};
    use crate::hashing::HashAlgorithm;
    use crate::ids::{GateId, NamespaceId, TenantId};
    use crate::run::SafeSummary;
    use crate::spec::ScenarioSpec;
    use crate::time::Timestamp;

    fn id<T: std::str::FromStr>(s: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        s.parse().expect("valid test id")
    }

    fn linear() -> Value {
        json!({"kind": "linear"})
    }

    /// Unknown routes to `late`, false to `no`; with every gate true, `done`.
    fn branch() -> Value {
        json!({"kind": "branch", "branches": [
            {"gate_id": "g", "outcome": "unknown", "next_stage_id": "late"},
            {"gate_id": "g", "outcome": "false", "next_stage_id": "no"}
        ], "default": "done"})
    }

    /// `wait` (gate `g` on condition `c`, a 5-tick timeout) advancing as told; `done` discloses
    /// packet `pd` and passes into `late`, which is terminal, like `no`.
    fn plan(on_timeout: &str, advance_to: Value) -> Plan {
        let spec: ScenarioSpec = from_json_value(json!({
            "scenario_id": "s", "namespace_id": 1, "spec_version": "1",
            "stages": [
                {"stage_id": "wait", "gates": [{"gate_id": "g", "requirement": {"Condition": "c"}}],
                 "advance_to": advance_to, "timeout": {"timeout_ms": 5}, "on_timeout": on_timeout},
                {"stage_id": "done", "entry_packets": [{"packet_id": "pd", "schema_id": "x",
                    "content_type": "text/plain", "payload": {"kind": "json", "value": "done"}}],
                 "advance_to": {"kind": "linear"}},
                {"stage_id": "late", "advance_to": {"kind": "terminal"}},
                {"stage_id": "no", "advance_to": {"kind": "terminal"}}
            ],
            "conditions": [{"condition_id": "c", "query": {"provider_id": "facts", "check_id": "a"},
                            "comparator": "equals", "expected": true}]
        }))
        .expect("test spec parses");
        assert_eq!(validate_spec(&spec, None, None, &Limits::default()), vec![]);
        Plan::compile(spec, HashAlgorithm::Sha256).expect("test spec compiles")
    }

    fn event(trigger: &str, kind: TriggerKind, time: u64) -> TriggerEvent {
        TriggerEvent {
            correlation_id: None,
            kind,
            namespace_id: NamespaceId::new(1).unwrap(),
            payload: None,
            run_id: id("r"),
            source_id: "test".into(),
            tenant_id: TenantId::new(1).unwrap(),
            time: Timestamp::Logical(time),
            trigger_id: id(trigger),
        }
    }

    /// A run started at logical time 0, in `wait`.
    fn started(plan: &Plan) -> RunHead {
        let start_event = event("init", TriggerKind::ExternalEvent, 0);
        let key = RunKey {
            tenant_id: start_event.tenant_id,
            namespace_id: start_event.namespace_id,
            run_id: start_event.run_id.clone(),
        };
        start(plan, key, id("s"), Vec::new(), &start_event, Vec::new()).head
    }

    /// The first half of a step with `c`'s value, if the gates are evaluated.
    fn decided(plan: &Plan, head: &RunHead, event: &TriggerEvent, c: Option<bool>) -> Decided {
        match begin(plan, head, event).expect("the step begins") {
            Begun::TimedOut(decided) => decided,
            Begun::Evaluate(pending) => {
                let results = match plan.stage_conditions(pending.stage()).count() {
                    0 => Vec::new(),
                    _ => vec![c.map_or_else(
                        || EvidenceResult::empty(crate::evidence::TrustLane::Verified),
                        |v| EvidenceResult::json(json!(v)),
                    )],
                };
                pending.decide(plan, results, &EngineConfig::default(), &event.trigger_id)
            }
        }
    }

    /// The disclosure the live path makes, with the default policy and dispatcher.
    fn disclose(plan: &Plan, head: &RunHead, decided: &Decided, at: u64) -> Vec<PacketRecord> {
        let Some(to) = decided.discloses() else {
            return Vec::new();
        };
        let targets = [DispatchTarget::Agent {
            agent_id: "agent-1".into(),
        }];
        let ctx = DisclosureContext {
            run_id: &head.key.run_id,
            decision_id: decided.decision_id(),
            issued_at: Timestamp::Logical(at),
            correlation_id: None,
            targets: &targets,
        };
        futures::executor::block_on(issue_packets(
            plan,
            to,
            ctx,
            HashAlgorithm::Sha256,
            &StaticPolicy::permit_all(),
            &RecordingDispatcher,
        ))
        .expect("the default policy permits")
    }

    /// A whole step: begin, gates, the live disclosure, apply.
    fn step(
        plan: &Plan,
        head: RunHead,
        kind: TriggerKind,
        time: u64,
        c: Option<bool>,
    ) -> Transition {
        let event = event("t", kind, time);
        let decided = decided(plan, &head, &event, c);
        let packets = disclose(plan, &head, &decided, time);
        apply(plan, head, decided, Ok(packets), &event)
    }

    fn advance(from: &str, to: &str, timeout: bool) -> DecisionOutcome {
        DecisionOutcome::Advance {
            from_stage: id(from),
            to_stage: id(to),
            timeout,
        }
    }

    #[test]
    fn start_decides_start_in_the_first_stage() {
        let plan = plan("fail", linear());
        let head = started(&plan);
        assert_eq!(
            head.last_decision.outcome,
            DecisionOutcome::Start {
                stage_id: id("wait")
            }
        );
        assert_eq!(head.last_decision.decision_id, first_decision_id());
        assert_eq!(
            (head.revision, head.counts.triggers, head.counts.decisions),
            (1, 1, 1)
        );
        assert_eq!(head.status, RunStatus::Active);
        assert_eq!(head.stage_entered_at, Timestamp::Logical(0));
    }

    #[test]
    fn a_tick_at_the_deadline_times_out_with_fail() {
        let plan = plan("fail", linear());
        let head = started(&plan);
        let early = event("early", TriggerKind::Tick, 4);
        assert!(matches!(
            begin(&plan, &head, &early).unwrap(),
            Begun::Evaluate(_)
        ));
        let agent = event("agent", TriggerKind::AgentRequestNext, 50);
        assert!(
            matches!(begin(&plan, &head, &agent).unwrap(), Begun::Evaluate(_)),
            "only ticks apply timeouts"
        );
        let Begun::TimedOut(decided) =
            begin(&plan, &head, &event("t", TriggerKind::Tick, 5)).unwrap()
        else {
            panic!("the deadline is inclusive");
        };
        assert!(decided.gate_evals().is_empty(), "a timeout skips the gates");
        assert_eq!(decided.discloses(), None);
        let t = step(&plan, head, TriggerKind::Tick, 5, Some(true));
        assert_eq!(
            t.decision.outcome,
            DecisionOutcome::Fail {
                reason: "timeout".into()
            }
        );
        assert_eq!(t.head.status, RunStatus::Failed);
        assert_eq!(t.head.current_stage_id, id("wait"));
    }

    #[test]
    fn a_timeout_with_advance_with_flag_enters_the_next_stage() {
        let plan = plan("advance_with_flag", linear());
        let t = step(&plan, started(&plan), TriggerKind::Tick, 10, Some(false));
        assert_eq!(t.decision.outcome, advance("wait", "done", true));
        assert!(t.gate_evals.is_empty());
        assert_eq!(t.packets.len(), 1, "the entered stage's packets");
        assert_eq!(t.packets[0].decision_id, DecisionId::for_seq(2));
        assert_eq!(t.head.current_stage_id, id("done"));
        assert_eq!(t.head.stage_entered_at, Timestamp::Logical(10));
        assert_eq!(t.head.status, RunStatus::Active);
        assert_eq!(t.head.counts.packets, 1);
    }

    #[test]
    fn a_timeout_with_alternate_branch_routes_through_unknown() {
        let plan = plan("alternate_branch", branch());
        let t = step(&plan, started(&plan), TriggerKind::Tick, 10, Some(true));
        assert_eq!(
            t.decision.outcome,
            advance("wait", "late", true),
            "every gate counts as unknown, whatever the evidence"
        );
        assert!(t.packets.is_empty());
        assert_eq!(t.head.current_stage_id, id("late"));
    }

    #[test]
    fn a_timed_out_branch_that_cannot_route_fails() {
        // advance_with_flag makes every gate true: no rule matches true and there is no default.
        let plan = plan(
            "advance_with_flag",
            json!({"kind": "branch", "branches": [
                {"gate_id": "g", "outcome": "false", "next_stage_id": "no"}
            ]}),
        );
        let t = step(&plan, started(&plan), TriggerKind::Tick, 10, None);
        assert_eq!(
            t.decision.outcome,
            DecisionOutcome::Fail {
                reason: "timeout".into()
            }
        );
        assert_eq!(t.head.status, RunStatus::Failed);
    }

    #[test]
    fn passing_gates_advance_and_branches_route_on_outcomes() {
        let plan = plan("fail", branch());
        for (c, to) in [(Some(true), "done"), (Some(false), "no"), (None, "late")] {
            let t = step(&plan, started(&plan), TriggerKind::AgentRequestNext, 3, c);
            assert_eq!(t.decision.outcome, advance("wait", to, false), "{c:?}");
            assert_eq!(t.gate_evals.len(), 1);
            assert_eq!(t.head.current_stage_id, id(to));
            assert_eq!(t.head.stage_entered_at, Timestamp::Logical(3));
        }
    }

    #[test]
    fn a_passing_last_stage_completes() {
        let plan = plan("fail", linear());
        let head = step(&plan, started(&plan), TriggerKind::Tick, 3, Some(true)).head;
        assert_eq!(head.current_stage_id, id("done"));
        let head = step(&plan, head, TriggerKind::Tick, 4, None).head;
        assert_eq!(head.current_stage_id, id("late"), "a gateless stage passes");
        let t = step(&plan, head, TriggerKind::Tick, 5, None);
        assert_eq!(
            t.decision.outcome,
            DecisionOutcome::Complete {
                stage_id: id("late")
            }
        );
        assert_eq!(t.head.status, RunStatus::Completed);
        assert_eq!(t.head.current_stage_id, id("late"));
    }

    #[test]
    fn unmet_gates_hold_and_the_run_stays() {
        let plan = plan("fail", linear());
        let before = started(&plan);
        let t = step(
            &plan,
            before.clone(),
            TriggerKind::AgentRequestNext,
            3,
            Some(false),
        );
        assert_eq!(
            t.decision.outcome,
            DecisionOutcome::Hold {
                summary: SafeSummary {
                    status: "hold".into(),
                    unmet_gates: vec![id::<GateId>("g")],
                    retry_hint: "await_evidence".into(),
                    policy_tags: Vec::new(),
                }
            }
        );
        assert!(t.packets.is_empty());
        assert_eq!(t.head.current_stage_id, before.current_stage_id);
        assert_eq!(t.head.stage_entered_at, before.stage_entered_at);
        assert_eq!(t.head.status, RunStatus::Active);
    }

    #[test]
    fn a_failed_disclosure_turns_the_advance_into_a_fail() {
        let plan = plan("fail", linear());
        let head = started(&plan);
        let event = event("t", TriggerKind::AgentRequestNext, 3);
        let decided = decided(&plan, &head, &event, Some(true));
        assert_eq!(decided.discloses(), plan.stage_index(&id("done")));
        let refused = DisclosureFailure {
            denied: true,
            reason: "policy denied disclosure".into(),
        };
        let t = apply(&plan, head.clone(), decided, Err(refused), &event);
        assert_eq!(
            t.decision.outcome,
            DecisionOutcome::Fail {
                reason: "policy denied disclosure".into()
            }
        );
        assert!(
            t.packets.is_empty(),
            "a refused disclosure records no packet"
        );
        assert_eq!(t.head.status, RunStatus::Failed);
        assert_eq!(t.head.current_stage_id, head.current_stage_id);
        assert_eq!(t.head.counts.packets, head.counts.packets);
        assert_eq!(t.gate_evals.len(), 1, "the gates that decided are recorded");
    }

    #[test]
    fn the_decision_and_the_entry_number_from_the_head() {
        let plan = plan("fail", linear());
        let head = started(&plan);
        let event = event("t", TriggerKind::AgentRequestNext, 3);
        let decided = decided(&plan, &head, &event, Some(false));
        let t = apply(&plan, head, decided, Ok(Vec::new()), &event);
        assert_eq!(t.decision.seq, 2);
        assert_eq!(t.decision.decision_id, DecisionId::for_seq(2));
        assert_eq!(t.decision.stage_id, id("wait"));
        assert_eq!(t.decision.decided_at, event.time);
        assert_eq!(t.head.last_decision, t.decision);
        assert_eq!(t.result().status, RunStatus::Active);
        let call = ToolCallRecord {
            call_id: "call-1".into(),
            method: "scenario.next".into(),
            request_hash: HashAlgorithm::Sha256.digest(b""),
            response_hash: HashAlgorithm::Sha256.digest(b""),
            called_at: event.time,
            correlation_id: None,
            error: None,
        };
        let (head, entry) = t.into_entry(event, Some(call));
        assert_eq!((head.revision, entry.revision), (2, 2));
        assert_eq!(head.counts.tool_calls, 1);
        let EntryBody::Trigger(trigger) = entry.body else {
            panic!("a trigger entry");
        };
        assert_eq!(trigger.trigger.seq, 2);
        assert_eq!(trigger.decision, head.last_decision);
    }

    #[test]
    fn unknown_stages_and_overflowing_deadlines_are_refused() {
        let plan = plan("fail", linear());
        let mut head = started(&plan);
        head.stage_entered_at = Timestamp::Logical(u64::MAX - 1);
        let tick = event("t", TriggerKind::Tick, u64::MAX);
        assert_eq!(
            begin(&plan, &head, &tick).err(),
            Some(TransitionError::DeadlineOverflow)
        );
        assert!(
            begin(
                &plan,
                &head,
                &event("n", TriggerKind::AgentRequestNext, u64::MAX)
            )
            .is_ok(),
            "only a tick needs the deadline"
        );
        head.current_stage_id = id("gone");
        assert_eq!(
            begin(&plan, &head, &tick).err(),
            Some(TransitionError::UnknownStage(id("gone")))
        );
    }

    #[test]
    fn follow_moves_a_head_past_a_recorded_decision_like_apply() {
        let plan = plan("fail", branch());
        let head = started(&plan);
        let t = step(
            &plan,
            head.clone(),
            TriggerKind::AgentRequestNext,
            3,
            Some(false),
        );
        let mut followed = head;
        follow(
            &mut followed,
            &event("t", TriggerKind::AgentRequestNext, 3),
            t.decision.clone(),
            t.packets.len(),
        );
        assert_eq!(followed, t.head);
    }
}
