//! Between protobuf messages and the tool layer: a request becomes the JSON arguments of the
//! MCP tool of the same name (so both transports share one dispatch, one validation and the same
//! error messages), and a tool's JSON result becomes the typed response through the core types
//! it was serialised from.

use decision_gate_core::disclosure::{DispatchReceipt, DispatchTarget, PacketEnvelope};
use decision_gate_core::hashing::HashDigest;
use decision_gate_core::run::{DecisionOutcome, DecisionRecord, SafeSummary, TriggerKind};
use decision_gate_core::spec::{ContentRef, PacketPayload};
use decision_gate_core::{RunStatus, Timestamp};

use crate::config::FeedbackLevel;
use crate::error::ToolError;
use crate::tools::TriggerAnswer;
use crate::tools::{NextArgs, NextRequestArgs};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tonic::Status;

use super::pb;

/// A request message that does not convert to the tool's arguments: an `invalid_input` tool
/// error, audited and reported like the same mistake over MCP.
type Invalid = ToolError;

/// A required field that was not sent.
pub(super) fn missing(field: &str) -> Invalid {
    ToolError::invalid_arguments(field, "required")
}

/// UTF-8 JSON text from a `*_json` field.
pub(super) fn json_text(text: &str, field: &str) -> Result<Value, Invalid> {
    serde_json::from_str(text)
        .map_err(|e| ToolError::invalid_arguments(field, format!("not valid JSON: {e}")))
}

/// An optional `*_json` field.
pub(super) fn optional_json(text: Option<&str>, field: &str) -> Result<Value, Invalid> {
    text.map_or(Ok(Value::Null), |t| json_text(t, field))
}

/// `Next`'s message as `scenario_next`'s typed arguments, with no JSON in between; each field
/// is checked as the tool checks it and a refusal names it by its tool path.
pub(super) fn next_args(r: &pb::NextRequest) -> Result<NextArgs, Invalid> {
    fn id<T: std::str::FromStr<Err = decision_gate_core::ids::IdError>>(
        value: &str,
        field: &str,
    ) -> Result<T, Invalid> {
        value
            .parse()
            .map_err(|e| ToolError::invalid_arguments(field, e))
    }
    Ok(NextArgs {
        scenario_id: id(&r.scenario_id, "scenario_id")?,
        feedback: feedback_level(r.feedback)?,
        request: NextRequestArgs {
            run_id: id(&r.run_id, "request.run_id")?,
            tenant_id: decision_gate_core::TenantId::new(r.tenant_id)
                .map_err(|e| ToolError::invalid_arguments("request.tenant_id", e))?,
            namespace_id: decision_gate_core::NamespaceId::new(r.namespace_id)
                .map_err(|e| ToolError::invalid_arguments("request.namespace_id", e))?,
            correlation_id: r
                .correlation_id
                .as_deref()
                .map(|c| id(c, "request.correlation_id"))
                .transpose()?,
            trigger_id: id(&r.trigger_id, "request.trigger_id")?,
            agent_id: r.agent_id.clone(),
            time: match r.time.as_ref().and_then(|t| t.kind) {
                Some(pb::timestamp::Kind::UnixMillis(ms)) => Timestamp::UnixMillis(ms),
                Some(pb::timestamp::Kind::Logical(n)) => Timestamp::Logical(n),
                None => return Err(missing("time")),
            },
        },
    })
}

/// A required timestamp, as the tools take it.
pub(super) fn timestamp(t: Option<&pb::Timestamp>, field: &str) -> Result<Value, Invalid> {
    use pb::timestamp::Kind;
    match t.and_then(|t| t.kind) {
        Some(Kind::UnixMillis(ms)) => Ok(json!({ "kind": "unix_millis", "value": ms })),
        Some(Kind::Logical(n)) => Ok(json!({ "kind": "logical", "value": n })),
        None => Err(missing(field)),
    }
}

/// A required payload, as the tools take it.
pub(super) fn payload(p: Option<&pb::Payload>, field: &str) -> Result<Value, Invalid> {
    use pb::payload::Kind;
    match p.and_then(|p| p.kind.as_ref()) {
        Some(Kind::Json(text)) => Ok(json!({
            "kind": "json",
            "value": json_text(text, &format!("{field}.json"))?,
        })),
        Some(Kind::Bytes(bytes)) => Ok(json!({ "kind": "bytes", "bytes": bytes })),
        Some(Kind::External(r)) => {
            let hash = r
                .content_hash
                .as_ref()
                .ok_or_else(|| missing(&format!("{field}.external.content_hash")))?;
            Ok(json!({
                "kind": "external",
                "content_ref": {
                    "uri": r.uri,
                    "content_hash": { "algorithm": hash.algorithm, "value": hash.value },
                    "encryption": r.encryption,
                },
            }))
        }
        None => Err(missing(field)),
    }
}

/// A dispatch target, as the tools take it.
pub(super) fn dispatch_target(t: &pb::DispatchTarget, field: &str) -> Result<Value, Invalid> {
    use pb::dispatch_target::Kind;
    match &t.kind {
        Some(Kind::AgentId(id)) => Ok(json!({ "kind": "agent", "agent_id": id })),
        Some(Kind::SessionId(id)) => Ok(json!({ "kind": "session", "session_id": id })),
        Some(Kind::External(e)) => Ok(json!({
            "kind": "external", "system": e.system, "target": e.target,
        })),
        Some(Kind::Channel(c)) => Ok(json!({ "kind": "channel", "channel": c })),
        None => Err(missing(field)),
    }
}

/// A trigger kind, as the tools take it.
pub(super) fn trigger_kind(kind: i32) -> Result<Value, Invalid> {
    let kind = match pb::TriggerKind::try_from(kind) {
        Ok(pb::TriggerKind::AgentRequestNext) => TriggerKind::AgentRequestNext,
        Ok(pb::TriggerKind::Tick) => TriggerKind::Tick,
        Ok(pb::TriggerKind::ExternalEvent) => TriggerKind::ExternalEvent,
        Ok(pb::TriggerKind::BackendEvent) => TriggerKind::BackendEvent,
        Ok(pb::TriggerKind::Unspecified) => return Err(missing("kind")),
        Err(_) => {
            return Err(ToolError::invalid_arguments(
                "kind",
                format!("unknown trigger kind {kind}"),
            ));
        }
    };
    Ok(json!(kind))
}

/// A feedback level, as `scenario_next` takes it (`None` for the server's default).
fn feedback_level(level: i32) -> Result<Option<FeedbackLevel>, Invalid> {
    match pb::FeedbackLevel::try_from(level) {
        Ok(pb::FeedbackLevel::Unspecified) => Ok(None),
        Ok(pb::FeedbackLevel::Summary) => Ok(Some(FeedbackLevel::Summary)),
        Ok(pb::FeedbackLevel::Trace) => Ok(Some(FeedbackLevel::Trace)),
        Ok(pb::FeedbackLevel::Evidence) => Ok(Some(FeedbackLevel::Evidence)),
        Err(_) => Err(ToolError::invalid_arguments(
            "feedback",
            format!("unknown feedback level {level}"),
        )),
    }
}

fn feedback_level_of(level: FeedbackLevel) -> pb::FeedbackLevel {
    match level {
        FeedbackLevel::Summary => pb::FeedbackLevel::Summary,
        FeedbackLevel::Trace => pb::FeedbackLevel::Trace,
        FeedbackLevel::Evidence => pb::FeedbackLevel::Evidence,
    }
}

/// Reads a tool result (or a part of one) as the core type it was serialised from.
pub(super) fn read<T: DeserializeOwned>(value: Value, what: &str) -> Result<T, Status> {
    serde_json::from_value(value)
        .map_err(|e| Status::internal(format!("the {what} of a result could not be read: {e}")))
}

/// Takes `key` out of a tool result as the core type it was serialised from.
pub(super) fn take<T: DeserializeOwned>(value: &mut Value, key: &str) -> Result<T, Status> {
    read(
        value.get_mut(key).map(Value::take).unwrap_or(Value::Null),
        key,
    )
}

/// A JSON value as `*_json` text.
pub(super) fn text(value: &Value) -> String {
    value.to_string()
}

/// `*_json` text of an optional member, unset when absent or null.
pub(super) fn optional_text(value: &Value, key: &str) -> Option<String> {
    value.get(key).filter(|v| !v.is_null()).map(text)
}

pub(super) fn ts(t: Timestamp) -> pb::Timestamp {
    use pb::timestamp::Kind;
    pb::Timestamp {
        kind: Some(match t {
            Timestamp::UnixMillis(ms) => Kind::UnixMillis(ms),
            Timestamp::Logical(n) => Kind::Logical(n),
        }),
    }
}

pub(super) fn digest(d: HashDigest) -> pb::Digest {
    pb::Digest {
        algorithm: d.algorithm.to_string(),
        value: d.value,
    }
}

pub(super) fn status(s: RunStatus) -> i32 {
    match s {
        RunStatus::Active => pb::RunStatus::Active,
        RunStatus::Completed => pb::RunStatus::Completed,
        RunStatus::Failed => pb::RunStatus::Failed,
    }
    .into()
}

pub(super) fn safe_summary(s: SafeSummary) -> pb::SafeSummary {
    pb::SafeSummary {
        status: s.status,
        unmet_gates: s.unmet_gates.iter().map(ToString::to_string).collect(),
        retry_hint: s.retry_hint,
        policy_tags: s.policy_tags,
    }
}

pub(super) fn outcome(o: DecisionOutcome) -> pb::DecisionOutcome {
    use pb::decision_outcome::{Advance, Complete, Fail, Hold, Kind, Start};
    let kind = match o {
        DecisionOutcome::Start { stage_id } => Kind::Start(Start {
            stage_id: stage_id.to_string(),
        }),
        DecisionOutcome::Complete { stage_id } => Kind::Complete(Complete {
            stage_id: stage_id.to_string(),
        }),
        DecisionOutcome::Advance {
            from_stage,
            to_stage,
            timeout,
        } => Kind::Advance(Advance {
            from_stage: from_stage.to_string(),
            to_stage: to_stage.to_string(),
            timeout,
        }),
        DecisionOutcome::Hold { summary } => Kind::Hold(Hold {
            summary: Some(safe_summary(summary)),
        }),
        DecisionOutcome::Fail { reason } => Kind::Fail(Fail { reason }),
    };
    pb::DecisionOutcome { kind: Some(kind) }
}

pub(super) fn decision(d: DecisionRecord) -> pb::Decision {
    pb::Decision {
        decision_id: d.decision_id.to_string(),
        seq: d.seq,
        trigger_id: d.trigger_id.to_string(),
        stage_id: d.stage_id.to_string(),
        decided_at: Some(ts(d.decided_at)),
        outcome: Some(outcome(d.outcome)),
        correlation_id: d.correlation_id.map(|c| c.to_string()),
    }
}

pub(super) fn packet_payload(p: PacketPayload) -> pb::Payload {
    use pb::payload::Kind;
    let kind = match p {
        PacketPayload::Json { value } => Kind::Json(value.to_string()),
        PacketPayload::Bytes { bytes } => Kind::Bytes(bytes),
        PacketPayload::External { content_ref } => Kind::External(content(content_ref)),
    };
    pb::Payload { kind: Some(kind) }
}

fn content(r: ContentRef) -> pb::ContentRef {
    pb::ContentRef {
        uri: r.uri,
        content_hash: Some(digest(r.content_hash)),
        encryption: r.encryption,
    }
}

fn target(t: DispatchTarget) -> pb::DispatchTarget {
    use pb::dispatch_target::{External, Kind};
    let kind = match t {
        DispatchTarget::Agent { agent_id } => Kind::AgentId(agent_id),
        DispatchTarget::Session { session_id } => Kind::SessionId(session_id),
        DispatchTarget::External { system, target } => Kind::External(External { system, target }),
        DispatchTarget::Channel { channel } => Kind::Channel(channel),
    };
    pb::DispatchTarget { kind: Some(kind) }
}

fn receipt(r: DispatchReceipt) -> pb::DispatchReceipt {
    pb::DispatchReceipt {
        dispatch_id: r.dispatch_id,
        target: Some(target(r.target)),
        receipt_hash: Some(digest(r.receipt_hash)),
        dispatched_at: Some(ts(r.dispatched_at)),
        dispatcher: r.dispatcher,
    }
}

fn envelope(e: PacketEnvelope) -> pb::PacketEnvelope {
    pb::PacketEnvelope {
        scenario_id: e.scenario_id.to_string(),
        run_id: e.run_id.to_string(),
        stage_id: e.stage_id.to_string(),
        packet_id: e.packet_id.to_string(),
        schema_id: e.schema_id.to_string(),
        content_type: e.content_type,
        content_hash: Some(digest(e.content_hash)),
        visibility: Some(pb::PacketVisibility {
            labels: e.visibility.labels,
            policy_tags: e.visibility.policy_tags,
        }),
        expiry: e.expiry.map(ts),
        correlation_id: e.correlation_id.map(|c| c.to_string()),
        issued_at: Some(ts(e.issued_at)),
    }
}

pub(super) fn packet(p: decision_gate_core::disclosure::PacketRecord) -> pb::Packet {
    pb::Packet {
        envelope: Some(envelope(p.envelope)),
        payload: Some(packet_payload(p.payload)),
        receipts: p.receipts.into_iter().map(receipt).collect(),
        decision_id: p.decision_id.to_string(),
    }
}

/// The answer of `scenario_next` and `scenario_trigger`.
pub(super) fn trigger_response(answer: TriggerAnswer) -> Result<pb::TriggerResponse, Status> {
    let TriggerAnswer { result, feedback } = answer;
    let feedback = match feedback {
        None => None,
        Some(f) => Some(pb::Feedback {
            level: feedback_level_of(f.level).into(),
            gate_evaluations_json: f
                .gate_evaluations
                .map(|gates| serde_json::to_string(&gates))
                .transpose()
                .map_err(|e| {
                    Status::internal(format!("the gate evaluations could not be written: {e}"))
                })?,
            denied_reason: f.denied_reason,
        }),
    };
    Ok(pb::TriggerResponse {
        decision: Some(decision(result.decision)),
        packets: result.packets.into_iter().map(packet).collect(),
        status: status(result.status),
        feedback,
    })
}

pub(super) fn data_shape(r: decision_gate_core::store::DataShapeRecord) -> pb::DataShape {
    pb::DataShape {
        tenant_id: r.tenant_id.get(),
        namespace_id: r.namespace_id.get(),
        schema_id: r.schema_id.to_string(),
        version: r.version.to_string(),
        schema_json: r.schema.to_string(),
        description: r.description,
        created_at: Some(ts(r.created_at)),
        signing: r.signing.map(|s| pb::DataShapeSigning {
            key_id: s.key_id,
            signature: s.signature,
            algorithm: s.algorithm,
        }),
    }
}

/// A data shape, as `schemas_register` takes it.
pub(super) fn data_shape_args(r: &pb::DataShape) -> Result<Value, Invalid> {
    Ok(json!({
        "tenant_id": r.tenant_id,
        "namespace_id": r.namespace_id,
        "schema_id": r.schema_id,
        "version": r.version,
        "schema": json_text(&r.schema_json, "record.schema_json")?,
        "description": r.description,
        "created_at": timestamp(r.created_at.as_ref(), "record.created_at")?,
        "signing": r.signing.as_ref().map(|s| json!({
            "key_id": s.key_id, "signature": s.signature, "algorithm": s.algorithm,
        })),
    }))
}
