//! Runs: the head row, the append-only journal, and the records each journal entry carries.
//!
//! A run is a [`RunHead`] (status, stage, revision, counters, last decision) plus
//! [`JournalEntry`]s appended one per state change. The record shapes are the reference wire
//! shapes, so a run's triggers, gate evaluations, decisions, packets, submissions and tool calls
//! can be laid out as the reference runpack artifacts by concatenating entries.

use serde::{Deserialize, Serialize};

use crate::disclosure::{DispatchTarget, PacketRecord};
use crate::evidence::EvidenceRecord;
use crate::hashing::HashDigest;
use crate::ids::{
    ConditionId, CorrelationId, DecisionId, GateId, NamespaceId, RunId, ScenarioId, StageId,
    SubmissionId, TenantId, TriggerId,
};
use crate::ret::TriState;
use crate::spec::PacketPayload;
use crate::time::Timestamp;

/// Where a run lives: runs are keyed per (tenant, namespace).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunKey {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The namespace.
    pub namespace_id: NamespaceId,
    /// The run.
    pub run_id: RunId,
}

/// What caused a trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// An agent asked whether it may advance.
    AgentRequestNext,
    /// A scheduler tick; only ticks apply stage timeouts.
    Tick,
    /// An event from outside the system.
    ExternalEvent,
    /// An event from a backend service.
    BackendEvent,
}

/// A trigger as received.
///
/// Fields in canonical (sorted) order: it is hashed on every trigger, and canonical JSON writes
/// members that arrive in order without sorting them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerEvent {
    /// The request's correlation id.
    #[serde(default)]
    pub correlation_id: Option<CorrelationId>,
    /// What caused it.
    pub kind: TriggerKind,
    /// The run's namespace.
    pub namespace_id: NamespaceId,
    /// An optional payload, recorded with the trigger.
    #[serde(default)]
    pub payload: Option<PacketPayload>,
    /// The run.
    pub run_id: RunId,
    /// Who sent it (an agent id, a scheduler name, `system`).
    pub source_id: String,
    /// The run's tenant.
    pub tenant_id: TenantId,
    /// When, by the caller's clock; it must be of the kind the run started with.
    pub time: Timestamp,
    /// Idempotency key: a run decides each trigger id once.
    pub trigger_id: TriggerId,
}

/// A trigger with its 1-based sequence number in the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRecord {
    /// 1-based position among the run's triggers.
    pub seq: u64,
    /// The trigger.
    pub event: TriggerEvent,
}

/// One leaf visit of a gate evaluation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateTraceEntry {
    /// The condition visited.
    pub condition_id: ConditionId,
    /// Its status in this gate.
    pub status: TriState,
}

/// A gate's result and the trace that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateEvaluation {
    /// The gate.
    pub gate_id: GateId,
    /// Its outcome.
    pub status: TriState,
    /// Every leaf visit, in evaluation order.
    pub trace: Vec<GateTraceEntry>,
}

/// A gate evaluation with the evidence it used, sorted by condition id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateEvalRecord {
    /// The trigger being decided.
    pub trigger_id: TriggerId,
    /// The stage the gate belongs to.
    pub stage_id: StageId,
    /// The result.
    pub evaluation: GateEvaluation,
    /// The evidence of the gate's conditions, by condition id (byte order).
    pub evidence: Vec<EvidenceRecord>,
}

/// Why a run holds: gate ids only, never evidence values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeSummary {
    /// Always `hold`.
    pub status: String,
    /// Gates that did not pass, in stage order.
    pub unmet_gates: Vec<GateId>,
    /// What the caller should do: `await_evidence`, or `no_branch_matched` for a branch stage
    /// whose gates pass but whose rules do not select a stage.
    pub retry_hint: String,
    /// Policy tags (reserved).
    pub policy_tags: Vec<String>,
}

/// What a decision decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DecisionOutcome {
    /// The run started in `stage_id`.
    Start {
        /// The first stage.
        stage_id: StageId,
    },
    /// The run completed in `stage_id`.
    Complete {
        /// The last stage.
        stage_id: StageId,
    },
    /// The run moved from one stage to another.
    Advance {
        /// The stage left.
        from_stage: StageId,
        /// The stage entered.
        to_stage: StageId,
        /// Whether a timeout forced the move.
        timeout: bool,
    },
    /// The run stays where it is.
    Hold {
        /// Which gates are unmet.
        summary: SafeSummary,
    },
    /// The run failed.
    Fail {
        /// Why.
        reason: String,
    },
}

/// One decision of a run.
///
/// Fields in canonical (sorted) order: it is hashed on every trigger, and canonical JSON writes
/// members that arrive in order without sorting them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRecord {
    /// The trigger's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// The trigger's time.
    pub decided_at: Timestamp,
    /// `decision-{seq}`.
    pub decision_id: DecisionId,
    /// The outcome.
    pub outcome: DecisionOutcome,
    /// 1-based position among the run's decisions.
    pub seq: u64,
    /// The stage the run was in before the decision.
    pub stage_id: StageId,
    /// The trigger decided.
    pub trigger_id: TriggerId,
}

/// An artifact attached to a run by a caller. Submissions never affect gates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionRecord {
    /// Idempotency key within the run.
    pub submission_id: SubmissionId,
    /// The run.
    pub run_id: RunId,
    /// The content.
    pub payload: PacketPayload,
    /// Its media type.
    pub content_type: String,
    /// Its digest.
    pub content_hash: HashDigest,
    /// When, by the caller's clock.
    pub submitted_at: Timestamp,
    /// The request's correlation id.
    pub correlation_id: Option<CorrelationId>,
}

/// An error recorded on a tool call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallError {
    /// A stable code.
    pub code: String,
    /// What went wrong.
    pub message: String,
    /// Structured details.
    pub details: Option<serde_json::Value>,
}

/// A state-changing call recorded in the run's transcript, by hashes only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCallRecord {
    /// `call-{n}`.
    pub call_id: String,
    /// `scenario.next`, `scenario.trigger` or `scenario.submit`.
    pub method: String,
    /// Digest of the canonical request.
    pub request_hash: HashDigest,
    /// Digest of the canonical response.
    pub response_hash: HashDigest,
    /// The request's time.
    pub called_at: Timestamp,
    /// The request's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// Set when the call failed.
    pub error: Option<ToolCallError>,
}

/// The lifecycle state of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepting triggers.
    Active,
    /// Passed its last stage.
    Completed,
    /// Failed (timeout, refused disclosure).
    Failed,
}

impl RunStatus {
    /// The wire name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// How many of each record a run holds; the next record's sequence number is count + 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunCounts {
    /// Triggers, including the start trigger.
    pub triggers: u64,
    /// Decisions, including the start decision.
    pub decisions: u64,
    /// Packets issued.
    pub packets: u64,
    /// Submissions.
    pub submissions: u64,
    /// Tool-call records.
    pub tool_calls: u64,
}

/// The current state of a run: everything a trigger needs, none of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunHead {
    /// Where the run lives.
    pub key: RunKey,
    /// Its scenario.
    pub scenario_id: ScenarioId,
    /// The digest of the scenario spec the run follows.
    pub spec_hash: HashDigest,
    /// The stage the run is in.
    pub current_stage_id: StageId,
    /// When the run entered that stage (the kind of every later trigger time).
    pub stage_entered_at: Timestamp,
    /// Its lifecycle state.
    pub status: RunStatus,
    /// Where disclosed packets are dispatched.
    pub dispatch_targets: Vec<DispatchTarget>,
    /// The number of journal entries; the next entry has revision + 1.
    pub revision: u64,
    /// Record counters.
    pub counts: RunCounts,
    /// The most recent decision.
    pub last_decision: DecisionRecord,
}

/// A trigger and everything deciding it produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerEntry {
    /// The trigger.
    pub trigger: TriggerRecord,
    /// One evaluation per gate of the stage, in stage order (empty when a timeout decided).
    pub gate_evals: Vec<GateEvalRecord>,
    /// The decision.
    pub decision: DecisionRecord,
    /// Packets disclosed by the decision.
    pub packets: Vec<PacketRecord>,
    /// The call that carried the trigger (absent for the start trigger).
    pub tool_call: Option<ToolCallRecord>,
}

/// A submission and the call that carried it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmissionEntry {
    /// The submission.
    pub submission: SubmissionRecord,
    /// The call.
    pub tool_call: ToolCallRecord,
}

/// What a journal entry records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EntryBody {
    /// A decided trigger.
    Trigger(Box<TriggerEntry>),
    /// A submission.
    Submission(Box<SubmissionEntry>),
}

/// One append-only journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// 1-based; equal to the head revision after the append.
    pub revision: u64,
    /// What it records.
    pub body: EntryBody,
}

impl JournalEntry {
    /// The trigger id, for trigger entries.
    #[must_use]
    pub fn trigger_id(&self) -> Option<&TriggerId> {
        match &self.body {
            EntryBody::Trigger(t) => Some(&t.trigger.event.trigger_id),
            EntryBody::Submission(_) => None,
        }
    }

    /// The submission id, for submission entries.
    #[must_use]
    pub fn submission_id(&self) -> Option<&SubmissionId> {
        match &self.body {
            EntryBody::Submission(s) => Some(&s.submission.submission_id),
            EntryBody::Trigger(_) => None,
        }
    }
}

/// What a trigger returns: `{decision, packets, status}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerResult {
    /// The decision for the trigger.
    pub decision: DecisionRecord,
    /// The packets that decision disclosed.
    pub packets: Vec<PacketRecord>,
    /// The run's status now.
    pub status: RunStatus,
}
