//! The tool surface: the catalogue `tools/list` answers, and the one dispatch from a tool call
//! to a service method. Handlers are thin: parse the arguments, build the request context, call
//! one service method, shape the result.

mod args;
mod schema;

use std::sync::Arc;

use decision_gate_core::run::{GateEvalRecord, TriggerEvent};
use decision_gate_core::runpack::VerifyOptions;
use decision_gate_core::service::{DataShapeId, EvidenceQueryRequest, PrecheckRequest};
use decision_gate_core::store::{DataShapeRecord, PageRequest};
use decision_gate_core::{
    Action, DecisionGate, NextRequest, StartRequest, SubmitRequest, TriggerResult,
};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::caller::Caller;
use crate::config::{FeedbackConfig, FeedbackLevel};
use crate::error::ToolError;
use args::*;
pub(crate) use args::{NextArgs, NextRequest as NextRequestArgs};

/// Items per page when a list call names no limit.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// Every tool, in `Action::ALL` order, with its generated input schema.
#[must_use]
pub fn catalogue() -> Vec<Tool> {
    Action::ALL.into_iter().map(tool).collect()
}

fn tool(action: Action) -> Tool {
    let (description, schema, read_only) = match action {
        Action::ScenarioDefine => (
            "Validate a scenario spec and define it in its namespace. Defining an identical spec again changes nothing; a different spec under the same id is a conflict.",
            input_schema::<DefineArgs>(),
            false,
        ),
        Action::ScenarioStart => (
            "Start a run of a defined scenario; the start decision and the first stage's entry packets are recorded atomically.",
            input_schema::<StartArgs>(),
            false,
        ),
        Action::ScenarioStatus => (
            "Read a run's status: stage, lifecycle state, latest decision, disclosed packet ids and, when it holds, a safe summary of why.",
            input_schema::<StatusArgs>(),
            true,
        ),
        Action::ScenarioNext => (
            "Ask whether the run may advance: gathers the stage's evidence, evaluates its gates and records the decision and any packets it discloses. Idempotent per trigger_id.",
            input_schema::<NextArgs>(),
            false,
        ),
        Action::ScenarioSubmit => (
            "Attach an artifact to a run, content-hashed. Idempotent per submission_id; the same id with different content is a conflict.",
            input_schema::<SubmitArgs>(),
            false,
        ),
        Action::ScenarioTrigger => (
            "Send a scheduler or external trigger to a run and record the decision. Idempotent per trigger_id.",
            input_schema::<TriggerArgs>(),
            false,
        ),
        Action::EvidenceQuery => (
            "Ask one provider check directly. Returns the evidence digest and anchor; the raw value only when the server discloses raw evidence.",
            input_schema::<EvidenceQueryArgs>(),
            true,
        ),
        Action::RunpackExport => (
            "Export a run as a hash-verifiable runpack into the server's runpack store; returns the manifest and the export id.",
            input_schema::<ExportArgs>(),
            false,
        ),
        Action::RunpackVerify => (
            "Verify a stored runpack: every file hash, the root hash, the signature when present, and the journal against the spec.",
            input_schema::<VerifyArgs>(),
            true,
        ),
        Action::ProvidersList => (
            "List the evidence providers and their checks.",
            input_schema::<NoArgs>(),
            true,
        ),
        Action::ProviderContractGet => (
            "A provider's full capability contract and its digest.",
            input_schema::<ContractArgs>(),
            true,
        ),
        Action::ProviderCheckSchemaGet => (
            "One check's params schema, result schema and allowed comparators.",
            input_schema::<CheckSchemaArgs>(),
            true,
        ),
        Action::SchemasRegister => (
            "Register an immutable data shape (JSON Schema 2020-12) under (schema_id, version).",
            input_schema::<RegisterArgs>(),
            false,
        ),
        Action::SchemasList => (
            "Page through a namespace's data shapes; next_token is null on the last page.",
            input_schema::<ListArgs>(),
            true,
        ),
        Action::SchemasGet => (
            "Read one data shape.",
            input_schema::<SchemaGetArgs>(),
            true,
        ),
        Action::ScenariosList => (
            "Page through a namespace's scenarios; next_token is null on the last page.",
            input_schema::<ListArgs>(),
            true,
        ),
        Action::Precheck => (
            "Evaluate a stage against asserted evidence without touching any run: the decision it would make and each gate's evaluation.",
            input_schema::<PrecheckArgs>(),
            true,
        ),
    };
    let mut tool = Tool::new(action.name(), description, Arc::new(schema));
    tool.annotations = Some(
        ToolAnnotations::new()
            .read_only(read_only)
            .destructive(false)
            .idempotent(true)
            .open_world(false),
    );
    tool
}

fn input_schema<T: JsonSchema>() -> JsonObject {
    let settings = schemars::generate::SchemaSettings::draft2020_12();
    let schema = settings.into_generator().into_root_schema_for::<T>();
    match serde_json::to_value(schema) {
        Ok(Value::Object(mut object)) => {
            // Clients need only the shape: the Rust type's name and doc line are noise in
            // `tools/list`, where the tool has its own description.
            object.remove("title");
            object.remove("description");
            let mut value = Value::Object(object);
            unwrap_descriptions(&mut value);
            match value {
                Value::Object(object) => object,
                _ => JsonObject::new(),
            }
        }
        _ => JsonObject::new(),
    }
}

/// Doc comments are wrapped at 100 columns; descriptions read as one paragraph.
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => {
                        *text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// Parses a tool's arguments, naming the offending path on failure. Path tracking allocates for
/// every key, so it runs only once the plain parse has failed, to name the field.
fn parse<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    T::deserialize(&args).or_else(|_| {
        serde_path_to_error::deserialize(&args).map_err(|e| {
            let path = e.path().to_string();
            ToolError::invalid_arguments(&path, e.into_inner())
        })
    })
}

fn to_value(value: impl serde::Serialize) -> Result<Value, ToolError> {
    serde_json::to_value(value)
        .map_err(|e| ToolError::internal(format!("the result could not be serialised: {e}")))
}

/// What a tool call may see and do beyond the service: feedback levels and how runpacks are
/// verified.
#[derive(Clone, Debug)]
pub struct ToolPolicy {
    /// `scenario_next` feedback levels.
    pub feedback: FeedbackConfig,
    /// What `runpack_verify` and a verified `runpack_export` check: every decision replayed,
    /// signatures against the trusted keys (`[runpacks]`).
    pub verify: VerifyOptions,
}

impl Default for ToolPolicy {
    fn default() -> Self {
        Self {
            feedback: FeedbackConfig::default(),
            verify: VerifyOptions {
                replay: true,
                trusted_keys: Vec::new(),
            },
        }
    }
}

/// What `scenario_next` and `scenario_trigger` answer, before it becomes JSON (MCP) or
/// protobuf (gRPC): each transport converts it once, with no JSON round trip in between.
#[derive(Debug)]
pub struct TriggerAnswer {
    /// The decision, the packets it disclosed and the run's status.
    pub result: TriggerResult,
    /// What `scenario_next` adds; `None` for `scenario_trigger`.
    pub feedback: Option<Feedback>,
}

/// The feedback `scenario_next` returns beside its result.
#[derive(Debug)]
pub struct Feedback {
    /// The level given: the one asked for (or the default), capped by the server's maximum.
    pub level: FeedbackLevel,
    /// Each gate's evaluation, from level `trace` (evidence emptied below `evidence`).
    pub gate_evaluations: Option<Vec<GateEvalRecord>>,
    /// Why less than the level asked for was given.
    pub denied_reason: Option<String>,
}

impl TriggerAnswer {
    /// The tool result: the trigger result's fields, and `feedback` when there is one.
    ///
    /// # Errors
    /// [`ToolError`] (internal) when the result cannot be serialised.
    pub fn into_value(self) -> Result<Value, ToolError> {
        let mut value = to_value(&self.result)?;
        if let Some(f) = self.feedback {
            let mut feedback = json!({ "level": f.level });
            if let Some(gates) = f.gate_evaluations {
                feedback["gate_evaluations"] = to_value(gates)?;
            }
            if let Some(reason) = f.denied_reason {
                feedback["denied_reason"] = json!(reason);
            }
            value["feedback"] = feedback;
        }
        Ok(value)
    }
}

/// `scenario_next`: parses its arguments, decides the trigger, and adds the feedback the
/// policy allows.
///
/// # Errors
/// [`ToolError`] for arguments that do not match the schema and for every service error.
pub async fn next(
    gate: &DecisionGate,
    policy: &ToolPolicy,
    caller: &Caller,
    args: Value,
) -> Result<TriggerAnswer, ToolError> {
    next_typed(gate, policy, caller, parse(args)?).await
}

/// `scenario_next` on arguments a transport already typed (gRPC converts its message straight
/// to them, with no JSON in between).
///
/// # Errors
/// [`ToolError`] for every service error.
pub(crate) async fn next_typed(
    gate: &DecisionGate,
    policy: &ToolPolicy,
    caller: &Caller,
    a: NextArgs,
) -> Result<TriggerAnswer, ToolError> {
    let r = a.request;
    let ctx = caller.context(r.tenant_id, r.namespace_id, r.correlation_id.clone());
    let level = a
        .feedback
        .unwrap_or(policy.feedback.default)
        .min(policy.feedback.max);
    // The gates are read in the same call as the decision: one authorization, one audit event.
    let decided = gate
        .next_with(
            &ctx,
            NextRequest {
                scenario_id: a.scenario_id,
                run_id: r.run_id,
                trigger_id: r.trigger_id,
                agent_id: r.agent_id,
                time: r.time,
            },
            level >= FeedbackLevel::Trace,
        )
        .await?;
    let mut gate_evaluations = decided.gate_evaluations;
    if level < FeedbackLevel::Evidence {
        for g in gate_evaluations.iter_mut().flatten() {
            g.evidence.clear();
        }
    }
    let denied_reason = a
        .feedback
        .is_some_and(|asked| asked > level)
        .then(|| format!("the server allows feedback up to {level:?}").to_lowercase());
    Ok(TriggerAnswer {
        result: decided.result,
        feedback: Some(Feedback {
            level,
            gate_evaluations,
            denied_reason,
        }),
    })
}

/// `scenario_trigger`: parses its arguments and decides the trigger.
///
/// # Errors
/// [`ToolError`] for arguments that do not match the schema and for every service error.
pub async fn trigger(
    gate: &DecisionGate,
    caller: &Caller,
    args: Value,
) -> Result<TriggerAnswer, ToolError> {
    let a: TriggerArgs = parse(args)?;
    let t = a.trigger;
    let ctx = caller.context(t.tenant_id, t.namespace_id, t.correlation_id);
    let event = TriggerEvent {
        trigger_id: t.trigger_id,
        tenant_id: t.tenant_id,
        namespace_id: t.namespace_id,
        run_id: t.run_id,
        kind: t.kind,
        time: t.time,
        source_id: t.source_id,
        payload: t.payload,
        correlation_id: ctx.correlation_id.clone(),
    };
    Ok(TriggerAnswer {
        result: gate.trigger(&ctx, &a.scenario_id, event).await?,
        feedback: None,
    })
}

/// Runs one tool call.
///
/// # Errors
/// [`ToolError`] for arguments that do not match the tool's schema and for every service error.
pub async fn call(
    gate: &DecisionGate,
    policy: &ToolPolicy,
    caller: &Caller,
    action: Action,
    args: Value,
) -> Result<Value, ToolError> {
    let args = if args.is_null() { json!({}) } else { args };
    // The MCP handler keeps this future in one allocation per call, so its size is paid per
    // call: the trigger tools run inline, the rest behind a second allocation, which keeps the
    // future the size of the trigger path rather than of the largest tool (about twice it).
    match action {
        Action::ScenarioNext => next(gate, policy, caller, args).await?.into_value(),
        Action::ScenarioTrigger => trigger(gate, caller, args).await?.into_value(),
        _ => Box::pin(call_any(gate, policy, caller, action, args)).await,
    }
}

/// Every tool, in one future as large as the largest tool's; see [`call`].
async fn call_any(
    gate: &DecisionGate,
    policy: &ToolPolicy,
    caller: &Caller,
    action: Action,
    args: Value,
) -> Result<Value, ToolError> {
    match action {
        Action::ScenarioDefine => {
            let a: DefineArgs = parse(args)?;
            let namespace = a
                .spec
                .get("namespace_id")
                .and_then(Value::as_u64)
                .and_then(|n| decision_gate_core::NamespaceId::new(n).ok());
            let tenant = a
                .spec
                .get("default_tenant_id")
                .and_then(Value::as_u64)
                .and_then(|t| decision_gate_core::TenantId::new(t).ok());
            let home = caller.home_context();
            let ctx = caller.context(
                tenant.unwrap_or(home.tenant_id),
                namespace.unwrap_or(home.namespace_id),
                None,
            );
            let text = a.spec.to_string();
            to_value(gate.define_scenario_json(&ctx, &text).await?)
        }
        Action::ScenarioStart => {
            let a: StartArgs = parse(args)?;
            if !a.issue_entry_packets {
                return Err(ToolError::unsupported(
                    "issue_entry_packets",
                    "must be true: entry packets are part of the start decision",
                ));
            }
            if !a.run_config.policy_tags.is_empty() {
                return Err(ToolError::unsupported(
                    "run_config.policy_tags",
                    "policy tags are not supported; send an empty list or omit the field",
                ));
            }
            if a.run_config
                .scenario_id
                .as_ref()
                .is_some_and(|s| *s != a.scenario_id)
            {
                return Err(ToolError::unsupported(
                    "run_config.scenario_id",
                    "must equal scenario_id",
                ));
            }
            let rc = a.run_config;
            let ctx = caller.context(rc.tenant_id, rc.namespace_id, None);
            let started = gate
                .start_run(
                    &ctx,
                    StartRequest {
                        scenario_id: a.scenario_id,
                        run_id: rc.run_id,
                        dispatch_targets: rc.dispatch_targets,
                        started_at: a.started_at,
                    },
                )
                .await?;
            to_value(json!({
                "run_id": started.run.key.run_id,
                "status": started.run.status,
                "current_stage_id": started.run.current_stage_id,
                "spec_hash": started.run.spec_hash,
                "revision": started.run.revision,
                "decision": started.decision,
                "packets": started.packets,
            }))
        }
        Action::ScenarioStatus => {
            let a: StatusArgs = parse(args)?;
            let r = a.request;
            let ctx = caller.context(r.tenant_id, r.namespace_id, r.correlation_id.clone());
            to_value(gate.status(&ctx, &a.scenario_id, &r.run_id).await?)
        }
        Action::ScenarioNext => next(gate, policy, caller, args).await?.into_value(),
        Action::ScenarioSubmit => {
            let a: SubmitArgs = parse(args)?;
            let r = a.request;
            let ctx = caller.context(r.tenant_id, r.namespace_id, r.correlation_id.clone());
            let record = gate
                .submit(
                    &ctx,
                    SubmitRequest {
                        scenario_id: a.scenario_id,
                        run_id: r.run_id,
                        submission_id: r.submission_id,
                        payload: r.payload,
                        content_type: r.content_type,
                        submitted_at: r.submitted_at,
                    },
                )
                .await?;
            Ok(json!({ "record": to_value(record)? }))
        }
        Action::ScenarioTrigger => trigger(gate, caller, args).await?.into_value(),
        Action::EvidenceQuery => {
            let a: EvidenceQueryArgs = parse(args)?;
            let c = a.context;
            let ctx = caller.context(c.tenant_id, c.namespace_id, c.correlation_id);
            let result = gate
                .query_evidence(
                    &ctx,
                    EvidenceQueryRequest {
                        query: a.query.into(),
                        run_id: c.run_id,
                        scenario_id: c.scenario_id,
                        stage_id: c.stage_id,
                        trigger_id: c.trigger_id,
                        trigger_time: c.trigger_time,
                    },
                )
                .await?;
            Ok(json!({ "result": to_value(result)? }))
        }
        Action::RunpackExport => {
            let a: ExportArgs = parse(args)?;
            let ctx = caller.context(a.tenant_id, a.namespace_id, None);
            let export = gate
                .export_runpack(
                    &ctx,
                    &a.scenario_id,
                    &a.run_id,
                    a.generated_at,
                    a.include_verification.then_some(&policy.verify),
                )
                .await?;
            let mut value = json!({
                "export_id": export.key.export_id,
                "manifest": to_value(&export.manifest)?,
                "storage_uri": export.uri,
            });
            if let Some(report) = export.report {
                value["report"] = to_value(report)?;
            }
            Ok(value)
        }
        Action::RunpackVerify => {
            let a: VerifyArgs = parse(args)?;
            let ctx = caller.context(a.tenant_id, a.namespace_id, None);
            let report = gate
                .verify_runpack(&ctx, &a.run_id, &a.export_id, &policy.verify)
                .await?;
            let status = if report.passed() { "pass" } else { "fail" };
            Ok(json!({ "status": status, "report": to_value(report)? }))
        }
        Action::ProvidersList => {
            let _: NoArgs = parse(args)?;
            let providers = gate.list_providers(&caller.home_context()).await?;
            Ok(json!({ "providers": to_value(providers)? }))
        }
        Action::ProviderContractGet => {
            let a: ContractArgs = parse(args)?;
            to_value(
                gate.provider_contract(&caller.home_context(), &a.provider_id)
                    .await?,
            )
        }
        Action::ProviderCheckSchemaGet => {
            let a: CheckSchemaArgs = parse(args)?;
            to_value(
                gate.check_schema(&caller.home_context(), &a.provider_id, &a.check_id)
                    .await?,
            )
        }
        Action::SchemasRegister => {
            let a: RegisterArgs = parse(args)?;
            let r = a.record;
            let ctx = caller.context(r.tenant_id, r.namespace_id, None);
            let record = gate
                .register_schema(
                    &ctx,
                    DataShapeRecord {
                        tenant_id: r.tenant_id,
                        namespace_id: r.namespace_id,
                        schema_id: r.schema_id,
                        version: r.version,
                        schema: r.schema,
                        description: r.description,
                        created_at: r.created_at,
                        signing: r.signing,
                    },
                )
                .await?;
            Ok(json!({ "record": to_value(record)? }))
        }
        Action::SchemasList | Action::ScenariosList => {
            let a: ListArgs = parse(args)?;
            let ctx = caller.context(a.tenant_id, a.namespace_id, None);
            let page = PageRequest {
                cursor: a.cursor,
                limit: a.limit.unwrap_or(DEFAULT_PAGE_SIZE),
            };
            if action == Action::SchemasList {
                to_value(gate.list_schemas(&ctx, page).await?)
            } else {
                to_value(gate.list_scenarios(&ctx, page).await?)
            }
        }
        Action::SchemasGet => {
            let a: SchemaGetArgs = parse(args)?;
            let ctx = caller.context(a.tenant_id, a.namespace_id, None);
            let record = gate.get_schema(&ctx, &a.schema_id, &a.version).await?;
            Ok(json!({ "record": to_value(record)? }))
        }
        Action::Precheck => {
            let a: PrecheckArgs = parse(args)?;
            let ctx = caller.context(a.tenant_id, a.namespace_id, None);
            to_value(
                gate.precheck(
                    &ctx,
                    PrecheckRequest {
                        scenario_id: a.scenario_id,
                        stage_id: a.stage_id,
                        evidence: a.evidence,
                        data_shape: a.data_shape.map(|d| DataShapeId {
                            schema_id: d.schema_id,
                            version: d.version,
                        }),
                        payload: a.payload,
                    },
                )
                .await?,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any change to a tool's name, description, annotations or input schema shows up here in
    /// review.
    #[test]
    fn tools_list_snapshot() {
        insta::assert_json_snapshot!("tools_list", catalogue());
    }

    #[test]
    fn every_schema_refuses_unknown_fields_at_the_top_level() {
        for tool in catalogue() {
            assert_eq!(
                tool.input_schema.get("additionalProperties"),
                Some(&json!(false)),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn arguments_errors_name_the_nested_field() {
        let error = parse::<StatusArgs>(json!({
            "scenario_id": "s",
            "request": { "run_id": "r", "tenant_id": 0, "namespace_id": 1 }
        }))
        .unwrap_err();
        assert_eq!(error.kind, "invalid_input");
        assert!(
            error.message.contains("request.tenant_id"),
            "{}",
            error.message
        );
        let error = parse::<ListArgs>(json!({ "tenant_id": 1, "namespace_id": 1, "limitt": 5 }))
            .unwrap_err();
        assert!(error.message.contains("limitt"), "{}", error.message);
    }
}

#[cfg(test)]
mod properties {
    use std::sync::Arc;

    use decision_gate_core::providers::{TimeConfig, TimeProvider};
    use proptest::prelude::*;

    use super::*;

    /// Arbitrary JSON, biased toward the shapes tools expect (objects with their field names).
    fn json_value() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "spec",
            "scenario_id",
            "run_id",
            "tenant_id",
            "namespace_id",
            "request",
            "trigger",
            "trigger_id",
            "time",
            "kind",
            "value",
            "cursor",
            "limit",
            "record",
            "query",
            "context",
            "provider_id",
            "check_id",
            "params",
            "evidence",
            "feedback",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_\\-\u{0}-\u{1f}\u{7f}é]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(names.clone(), inner, 0..6).prop_map(
                    |m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
                ),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The fuzz target's property, run in CI: any arguments to any tool end in a result or
        /// a tool error with a known kind, never a panic.
        #[test]
        fn any_arguments_end_in_a_result_or_a_known_error(tool in 0..Action::ALL.len(), args in json_value()) {
            let gate = DecisionGate::builder()
                .provider(Arc::new(TimeProvider::new(TimeConfig::default())))
                .expect("time provider")
                .build();
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            let outcome = runtime.block_on(call(&gate, &ToolPolicy::default(), &Caller::stdio(), Action::ALL[tool], args));
            if let Err(error) = outcome {
                prop_assert!(
                    ["invalid_input", "not_found", "too_large", "conflict", "already_exists"].contains(&error.kind.as_str()),
                    "unexpected kind {}: {}", error.kind, error.message
                );
            }
        }
    }
}
