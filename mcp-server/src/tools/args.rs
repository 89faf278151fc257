//! Tool arguments, in the reference shapes (tool-surface.md §1). Each type's doc comments are
//! its tool's input-schema descriptions; unknown fields are refused with their path. The
//! scope fields (`tenant_id`, `namespace_id`, `run_id`, ...) are spelled out in each type rather
//! than shared through `#[serde(flatten)]`, because a flattened field's errors lose their path.

use std::collections::BTreeMap;

use decision_gate_core::disclosure::DispatchTarget;
use decision_gate_core::evidence::EvidenceQuery;
use decision_gate_core::ids::{
    CheckId, ConditionId, CorrelationId, ProviderId, SchemaId, SchemaVersion, StageId,
    SubmissionId, TriggerId,
};
use decision_gate_core::run::TriggerKind;
use decision_gate_core::spec::PacketPayload;
use decision_gate_core::store::DataShapeSigning;
use decision_gate_core::{EvidenceResult, NamespaceId, RunId, ScenarioId, TenantId, Timestamp};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

use super::schema;
use crate::config::FeedbackLevel;

/// `scenario_define`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefineArgs {
    /// The scenario spec (Docs/scenario-authoring.md). Its `namespace_id` is the namespace it
    /// is defined in; the tenant is `default_tenant_id`, else the caller's.
    #[schemars(schema_with = "schema::object")]
    pub(crate) spec: Value,
}

/// `scenario_start`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartArgs {
    /// The scenario to run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The new run.
    pub(crate) run_config: RunConfig,
    /// The start time; its kind (unix_millis or logical) is the run's time kind.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) started_at: Timestamp,
    /// Whether to issue the first stage's entry packets; they are part of the start decision,
    /// so only `true` is accepted.
    #[serde(default = "yes")]
    pub(crate) issue_entry_packets: bool,
}

fn yes() -> bool {
    true
}

/// The new run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunConfig {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The run id, unique in the namespace.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The scenario; must equal the top-level `scenario_id` when given.
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) scenario_id: Option<ScenarioId>,
    /// Where disclosed packets go.
    #[serde(default)]
    #[schemars(schema_with = "schema::dispatch_targets")]
    pub(crate) dispatch_targets: Vec<DispatchTarget>,
    /// Not supported; must be empty when given.
    #[serde(default)]
    pub(crate) policy_tags: Vec<String>,
}

/// `scenario_status`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusArgs {
    /// The run's scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// Which run.
    pub(crate) request: StatusRequest,
}

/// Which run.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusRequest {
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// Ties this call to the caller's records (overrides the `x-correlation-id` header).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) correlation_id: Option<CorrelationId>,
    /// The caller's time; recorded nowhere, accepted for compatibility.
    #[serde(default)]
    #[expect(dead_code, reason = "accepted so reference clients work unchanged")]
    #[schemars(schema_with = "schema::optional_timestamp")]
    pub(crate) requested_at: Option<Timestamp>,
}

/// `scenario_next`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NextArgs {
    /// The run's scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The agent's request.
    pub(crate) request: NextRequest,
    /// How much of the evaluation to return: summary (default), trace or evidence; capped by
    /// the server's configuration.
    #[serde(default)]
    pub(crate) feedback: Option<FeedbackLevel>,
}

/// The agent's request.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NextRequest {
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// Ties this call to the caller's records (overrides the `x-correlation-id` header).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) correlation_id: Option<CorrelationId>,
    /// Idempotency key: the run decides each trigger id once.
    #[schemars(schema_with = "schema::id")]
    pub(crate) trigger_id: TriggerId,
    /// The asking agent.
    pub(crate) agent_id: String,
    /// The request time.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) time: Timestamp,
}

/// `scenario_submit`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitArgs {
    /// The run's scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The submission.
    pub(crate) request: SubmitRequest,
}

/// The submission.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitRequest {
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// Ties this call to the caller's records (overrides the `x-correlation-id` header).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) correlation_id: Option<CorrelationId>,
    /// Idempotency key within the run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) submission_id: SubmissionId,
    /// The content: `{kind: "json", value}`, `{kind: "bytes", bytes}` or
    /// `{kind: "external", ...}`.
    #[schemars(schema_with = "schema::payload")]
    pub(crate) payload: PacketPayload,
    /// Its media type.
    pub(crate) content_type: String,
    /// The submission time.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) submitted_at: Timestamp,
}

/// `scenario_trigger`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerArgs {
    /// The run's scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The trigger.
    pub(crate) trigger: Trigger,
}

/// A trigger from a scheduler or an external system.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Trigger {
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// Ties this call to the caller's records (overrides the `x-correlation-id` header).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) correlation_id: Option<CorrelationId>,
    /// Idempotency key: the run decides each trigger id once.
    #[schemars(schema_with = "schema::id")]
    pub(crate) trigger_id: TriggerId,
    /// What kind of trigger.
    #[schemars(schema_with = "schema::trigger_kind")]
    pub(crate) kind: TriggerKind,
    /// The trigger time.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) time: Timestamp,
    /// Who sent it.
    pub(crate) source_id: String,
    /// An optional payload.
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_payload")]
    pub(crate) payload: Option<PacketPayload>,
}

/// `evidence_query`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EvidenceQueryArgs {
    /// What to ask.
    pub(crate) query: Query,
    /// What the provider sees.
    pub(crate) context: QueryContext,
}

/// What to ask.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Query {
    /// The provider.
    #[schemars(schema_with = "schema::id")]
    pub(crate) provider_id: ProviderId,
    /// The provider's check.
    #[schemars(schema_with = "schema::id")]
    pub(crate) check_id: CheckId,
    /// Check parameters, validated against the check's params schema.
    #[serde(default)]
    #[schemars(schema_with = "schema::any")]
    pub(crate) params: Option<Value>,
}

impl From<Query> for EvidenceQuery {
    fn from(q: Query) -> Self {
        Self {
            provider_id: q.provider_id,
            check_id: q.check_id,
            params: q.params,
        }
    }
}

/// What the provider sees.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueryContext {
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// Ties this call to the caller's records (overrides the `x-correlation-id` header).
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) correlation_id: Option<CorrelationId>,
    /// The scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The stage.
    #[schemars(schema_with = "schema::id")]
    pub(crate) stage_id: StageId,
    /// The trigger id.
    #[schemars(schema_with = "schema::id")]
    pub(crate) trigger_id: TriggerId,
    /// The only time the provider may read.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) trigger_time: Timestamp,
}

/// `runpack_export`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportArgs {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The run's scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The export time, recorded in the manifest.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) generated_at: Timestamp,
    /// Also verify the stored runpack and return the report.
    #[serde(default)]
    pub(crate) include_verification: bool,
}

/// `runpack_verify`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct VerifyArgs {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The run.
    #[schemars(schema_with = "schema::id")]
    pub(crate) run_id: RunId,
    /// The export, as `runpack_export` returned it.
    #[schemars(schema_with = "schema::id")]
    pub(crate) export_id: String,
}

/// `providers_list`: no arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoArgs {}

/// `provider_contract_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContractArgs {
    /// The provider.
    #[schemars(schema_with = "schema::id")]
    pub(crate) provider_id: ProviderId,
}

/// `provider_check_schema_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckSchemaArgs {
    /// The provider.
    #[schemars(schema_with = "schema::id")]
    pub(crate) provider_id: ProviderId,
    /// The check.
    #[schemars(schema_with = "schema::id")]
    pub(crate) check_id: CheckId,
}

/// `schemas_register`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegisterArgs {
    /// The data shape; (tenant, namespace, schema_id, version) is registered once.
    pub(crate) record: ShapeRecord,
}

/// A data shape.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShapeRecord {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The schema.
    #[schemars(schema_with = "schema::id")]
    pub(crate) schema_id: SchemaId,
    /// Its version.
    #[schemars(schema_with = "schema::id")]
    pub(crate) version: SchemaVersion,
    /// A JSON Schema (2020-12) document.
    #[schemars(schema_with = "schema::any")]
    pub(crate) schema: Value,
    /// What it describes.
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// When it was registered, by the caller's clock.
    #[schemars(schema_with = "schema::timestamp")]
    pub(crate) created_at: Timestamp,
    /// An optional signature {key_id, signature, algorithm?}.
    #[serde(default)]
    #[schemars(schema_with = "schema::any")]
    pub(crate) signing: Option<DataShapeSigning>,
}

/// A page of a namespace's items (`schemas_list`, `scenarios_list`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListArgs {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The previous page's `next_token`; absent for the first page.
    #[serde(default)]
    pub(crate) cursor: Option<String>,
    /// Items per page, 1..=1000 (default 50).
    #[serde(default)]
    #[schemars(schema_with = "schema::limit")]
    pub(crate) limit: Option<u32>,
}

/// `schemas_get`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SchemaGetArgs {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The schema.
    #[schemars(schema_with = "schema::id")]
    pub(crate) schema_id: SchemaId,
    /// Its version.
    #[schemars(schema_with = "schema::id")]
    pub(crate) version: SchemaVersion,
}

/// `precheck`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PrecheckArgs {
    /// The tenant.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) tenant_id: TenantId,
    /// The namespace.
    #[schemars(schema_with = "schema::scope_id")]
    pub(crate) namespace_id: NamespaceId,
    /// The scenario.
    #[schemars(schema_with = "schema::id")]
    pub(crate) scenario_id: ScenarioId,
    /// The stage; the run's first stage when absent.
    #[serde(default)]
    #[schemars(schema_with = "schema::optional_id")]
    pub(crate) stage_id: Option<StageId>,
    /// Asserted evidence per condition id (each an evidence result, e.g.
    /// `{"value": {"kind": "json", "value": true}}`); it always counts as `asserted`. Give
    /// either this or `data_shape` with `payload`.
    #[serde(default)]
    #[schemars(schema_with = "schema::object")]
    pub(crate) evidence: BTreeMap<ConditionId, EvidenceResult>,
    /// The registered data shape (`{schema_id, version}`) that `payload` must match.
    #[serde(default)]
    pub(crate) data_shape: Option<DataShapeArgs>,
    /// Asserted data checked against `data_shape`: an object keyed by condition id, or any
    /// value when the stage has exactly one condition.
    #[serde(default)]
    #[schemars(schema_with = "schema::any")]
    pub(crate) payload: Option<Value>,
}

/// A registered data shape, by id and version.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataShapeArgs {
    /// The schema.
    #[schemars(schema_with = "schema::id")]
    pub(crate) schema_id: SchemaId,
    /// Its version.
    #[schemars(schema_with = "schema::id")]
    pub(crate) version: SchemaVersion,
}
