//! `decision_gate.v1.DecisionGate`: each method turns its message into the arguments of the
//! MCP tool of the same name, runs it through [`Shared::invoke`], and converts the result;
//! `Next` and `Trigger` convert the tool's typed answer instead (ADR 0007).

use std::sync::Arc;
use std::time::Instant;

use decision_gate_core::Action;
use decision_gate_core::store::{DataShapeRecord, Page, ScenarioSummary};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::convert::{self, take};
use super::{pb, status};
use crate::caller::{Caller, Transport};
use crate::error::ToolError;
use crate::handler::Shared;
use crate::tools;

/// The gRPC service over a server's shared state.
#[derive(Clone)]
pub struct GrpcApi {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    watches: super::watch::Watches,
}

impl GrpcApi {
    /// The service; `shutdown` ends its streams, `watch` bounds them.
    #[must_use]
    pub fn new(
        shared: Arc<Shared>,
        shutdown: CancellationToken,
        watch: &crate::config::WatchLimits,
    ) -> Self {
        Self {
            shared,
            shutdown,
            watches: super::watch::Watches::new(watch),
        }
    }

    /// One page of a list tool.
    async fn page<T: serde::de::DeserializeOwned>(
        &self,
        request: &Request<pb::ListRequest>,
        action: Action,
    ) -> Result<Page<T>, Status> {
        let r = request.get_ref();
        let args = json!({
            "tenant_id": r.tenant_id,
            "namespace_id": r.namespace_id,
            "cursor": r.cursor,
            "limit": r.limit,
        });
        convert::read(self.invoke(request, action, Ok(args)).await?, "page")
    }

    /// What every transport shares.
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The open `WatchRun` streams and their bounds.
    pub(super) fn watches(&self) -> &super::watch::Watches {
        &self.watches
    }

    /// Cancelled when the server shuts down.
    pub(super) fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The service behind the transports.
    pub(super) fn gate(&self) -> Arc<decision_gate_core::DecisionGate> {
        self.shared.gate.clone()
    }

    /// Runs one operation for the caller the admission guard attached. `args` is the request
    /// message converted to the tool's arguments; a message that did not convert is refused
    /// inside the same observed call, so it is counted, audited and carries its kind like a bad
    /// MCP argument.
    async fn invoke<T>(
        &self,
        request: &Request<T>,
        action: Action,
        args: Result<Value, ToolError>,
    ) -> Result<Value, Status> {
        let started = Instant::now();
        let caller = caller(request)?;
        self.shared
            .observe(Transport::Grpc, caller, action, started, || async move {
                tools::call(
                    &self.shared.gate,
                    &self.shared.policy,
                    caller,
                    action,
                    args?,
                )
                .await
            })
            .await
            .map_err(status::tool_error)
    }

    /// Runs `call`, `scenario_next` or `scenario_trigger` for `caller`, and converts its typed
    /// answer straight to the response message. `call` makes the future (see
    /// [`Shared::observe`]).
    async fn answer_trigger<F>(
        &self,
        caller: &Caller,
        action: Action,
        call: impl FnOnce() -> F,
    ) -> Answer<pb::TriggerResponse>
    where
        F: Future<Output = Result<tools::TriggerAnswer, crate::error::ToolError>>,
    {
        let answer = self
            .shared
            .observe(Transport::Grpc, caller, action, Instant::now(), call)
            .await
            .map_err(status::tool_error)?;
        Ok(Response::new(convert::trigger_response(answer)?))
    }
}

/// The caller the admission guard attached. Fail closed: a call without one did not pass it.
fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::internal("request reached the service unauthenticated"))
}

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::decision_gate_server::DecisionGate for GrpcApi {
    async fn define_scenario(
        &self,
        request: Request<pb::DefineScenarioRequest>,
    ) -> Answer<pb::DefineScenarioResponse> {
        let args = convert::json_text(&request.get_ref().spec_json, "spec_json")
            .map(|spec| json!({ "spec": spec }));
        let mut v = self.invoke(&request, Action::ScenarioDefine, args).await?;
        Ok(Response::new(pb::DefineScenarioResponse {
            scenario_id: take(&mut v, "scenario_id")?,
            spec_hash: Some(convert::digest(take(&mut v, "spec_hash")?)),
            created: take(&mut v, "created")?,
        }))
    }

    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Answer<pb::StartRunResponse> {
        let r = request.get_ref();
        let args = (|| -> Result<Value, ToolError> {
            let targets = r
                .dispatch_targets
                .iter()
                .enumerate()
                .map(|(i, t)| convert::dispatch_target(t, &format!("dispatch_targets[{i}]")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({
                "scenario_id": r.scenario_id,
                "started_at": convert::timestamp(r.started_at.as_ref(), "started_at")?,
                "run_config": {
                    "tenant_id": r.tenant_id,
                    "namespace_id": r.namespace_id,
                    "run_id": r.run_id,
                    "dispatch_targets": targets,
                },
            }))
        })();
        let mut v = self.invoke(&request, Action::ScenarioStart, args).await?;
        let packets: Vec<decision_gate_core::disclosure::PacketRecord> = take(&mut v, "packets")?;
        Ok(Response::new(pb::StartRunResponse {
            run_id: take(&mut v, "run_id")?,
            status: convert::status(take(&mut v, "status")?),
            current_stage_id: take(&mut v, "current_stage_id")?,
            spec_hash: Some(convert::digest(take(&mut v, "spec_hash")?)),
            revision: take(&mut v, "revision")?,
            decision: Some(convert::decision(take(&mut v, "decision")?)),
            packets: packets.into_iter().map(convert::packet).collect(),
        }))
    }

    async fn get_run_status(
        &self,
        request: Request<pb::GetRunStatusRequest>,
    ) -> Answer<pb::GetRunStatusResponse> {
        let r = request.get_ref();
        let args = json!({
            "scenario_id": r.scenario_id,
            "request": {
                "run_id": r.run_id,
                "tenant_id": r.tenant_id,
                "namespace_id": r.namespace_id,
                "correlation_id": r.correlation_id,
            },
        });
        let v = self
            .invoke(&request, Action::ScenarioStatus, Ok(args))
            .await?;
        let view: decision_gate_core::service::RunStatusView = convert::read(v, "run status")?;
        Ok(Response::new(pb::GetRunStatusResponse {
            run_id: view.run_id.to_string(),
            scenario_id: view.scenario_id.to_string(),
            current_stage_id: view.current_stage_id.to_string(),
            status: convert::status(view.status),
            last_decision: Some(convert::decision(view.last_decision)),
            issued_packet_ids: view
                .issued_packet_ids
                .iter()
                .map(ToString::to_string)
                .collect(),
            safe_summary: view.safe_summary.map(convert::safe_summary),
            revision: view.revision,
        }))
    }

    async fn next(&self, request: Request<pb::NextRequest>) -> Answer<pb::TriggerResponse> {
        // The message becomes the tool's typed arguments directly: no JSON tree built and
        // parsed back on the hottest call.
        let args = convert::next_args(request.get_ref());
        let caller = caller(&request)?;
        self.answer_trigger(caller, Action::ScenarioNext, || async move {
            tools::next_typed(&self.shared.gate, &self.shared.policy, caller, args?).await
        })
        .await
    }

    async fn submit(&self, request: Request<pb::SubmitRequest>) -> Answer<pb::SubmitResponse> {
        let r = request.get_ref();
        let args = (|| -> Result<Value, ToolError> {
            Ok(json!({
                "scenario_id": r.scenario_id,
                "request": {
                    "run_id": r.run_id,
                    "tenant_id": r.tenant_id,
                    "namespace_id": r.namespace_id,
                    "submission_id": r.submission_id,
                    "payload": convert::payload(r.payload.as_ref(), "payload")?,
                    "content_type": r.content_type,
                    "submitted_at": convert::timestamp(r.submitted_at.as_ref(), "submitted_at")?,
                    "correlation_id": r.correlation_id,
                },
            }))
        })();
        let mut v = self.invoke(&request, Action::ScenarioSubmit, args).await?;
        let record: decision_gate_core::run::SubmissionRecord = take(&mut v, "record")?;
        Ok(Response::new(pb::SubmitResponse {
            record: Some(pb::Submission {
                submission_id: record.submission_id.to_string(),
                run_id: record.run_id.to_string(),
                payload: Some(convert::packet_payload(record.payload)),
                content_type: record.content_type,
                content_hash: Some(convert::digest(record.content_hash)),
                submitted_at: Some(convert::ts(record.submitted_at)),
                correlation_id: record.correlation_id.map(|c| c.to_string()),
            }),
        }))
    }

    async fn trigger(&self, request: Request<pb::TriggerRequest>) -> Answer<pb::TriggerResponse> {
        let r = request.get_ref();
        let args = (|| -> Result<Value, ToolError> {
            let payload = match &r.payload {
                Some(p) => convert::payload(Some(p), "payload")?,
                None => Value::Null,
            };
            Ok(json!({
                "scenario_id": r.scenario_id,
                "trigger": {
                    "run_id": r.run_id,
                    "tenant_id": r.tenant_id,
                    "namespace_id": r.namespace_id,
                    "trigger_id": r.trigger_id,
                    "kind": convert::trigger_kind(r.kind)?,
                    "time": convert::timestamp(r.time.as_ref(), "time")?,
                    "source_id": r.source_id,
                    "payload": payload,
                    "correlation_id": r.correlation_id,
                },
            }))
        })();
        let caller = caller(&request)?;
        self.answer_trigger(caller, Action::ScenarioTrigger, || async move {
            tools::trigger(&self.shared.gate, caller, args?).await
        })
        .await
    }

    async fn query_evidence(
        &self,
        request: Request<pb::QueryEvidenceRequest>,
    ) -> Answer<pb::QueryEvidenceResponse> {
        let r = request.get_ref();
        let args = (|| -> Result<Value, ToolError> {
            Ok(json!({
                "query": {
                    "provider_id": r.provider_id,
                    "check_id": r.check_id,
                    "params": convert::optional_json(r.params_json.as_deref(), "params_json")?,
                },
                "context": {
                    "run_id": r.run_id,
                    "tenant_id": r.tenant_id,
                    "namespace_id": r.namespace_id,
                    "correlation_id": r.correlation_id,
                    "scenario_id": r.scenario_id,
                    "stage_id": r.stage_id,
                    "trigger_id": r.trigger_id,
                    "trigger_time": convert::timestamp(r.trigger_time.as_ref(), "trigger_time")?,
                },
            }))
        })();
        let v = self.invoke(&request, Action::EvidenceQuery, args).await?;
        Ok(Response::new(pb::QueryEvidenceResponse {
            result_json: convert::text(&v["result"]),
        }))
    }

    async fn export_runpack(
        &self,
        request: Request<pb::ExportRunpackRequest>,
    ) -> Answer<pb::ExportRunpackResponse> {
        let r = request.get_ref();
        let args = convert::timestamp(r.generated_at.as_ref(), "generated_at").map(|at| {
            json!({
                "tenant_id": r.tenant_id,
                "namespace_id": r.namespace_id,
                "scenario_id": r.scenario_id,
                "run_id": r.run_id,
                "generated_at": at,
                "include_verification": r.include_verification,
            })
        });
        let mut v = self.invoke(&request, Action::RunpackExport, args).await?;
        Ok(Response::new(pb::ExportRunpackResponse {
            export_id: take(&mut v, "export_id")?,
            manifest_json: convert::text(&v["manifest"]),
            storage_uri: take(&mut v, "storage_uri")?,
            report_json: convert::optional_text(&v, "report"),
        }))
    }

    async fn verify_runpack(
        &self,
        request: Request<pb::VerifyRunpackRequest>,
    ) -> Answer<pb::VerifyRunpackResponse> {
        let r = request.get_ref();
        let args = json!({
            "tenant_id": r.tenant_id,
            "namespace_id": r.namespace_id,
            "run_id": r.run_id,
            "export_id": r.export_id,
        });
        let v = self
            .invoke(&request, Action::RunpackVerify, Ok(args))
            .await?;
        Ok(Response::new(pb::VerifyRunpackResponse {
            passed: v["status"] == "pass",
            report_json: convert::text(&v["report"]),
        }))
    }

    async fn list_providers(
        &self,
        request: Request<pb::ListProvidersRequest>,
    ) -> Answer<pb::ListProvidersResponse> {
        let mut v = self
            .invoke(&request, Action::ProvidersList, Ok(json!({})))
            .await?;
        let providers: Vec<decision_gate_core::service::ProviderSummary> =
            take(&mut v, "providers")?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers
                .into_iter()
                .map(|p| pb::ProviderSummary {
                    provider_id: p.provider_id.to_string(),
                    transport: p.transport.name().to_owned(),
                    description: p.description,
                    checks: p.checks.iter().map(ToString::to_string).collect(),
                })
                .collect(),
        }))
    }

    async fn get_provider_contract(
        &self,
        request: Request<pb::GetProviderContractRequest>,
    ) -> Answer<pb::GetProviderContractResponse> {
        let args = json!({ "provider_id": request.get_ref().provider_id });
        let v = self
            .invoke(&request, Action::ProviderContractGet, Ok(args))
            .await?;
        Ok(Response::new(pb::GetProviderContractResponse {
            contract_json: convert::text(&v),
        }))
    }

    async fn get_provider_check_schema(
        &self,
        request: Request<pb::GetProviderCheckSchemaRequest>,
    ) -> Answer<pb::GetProviderCheckSchemaResponse> {
        let r = request.get_ref();
        let args = json!({ "provider_id": r.provider_id, "check_id": r.check_id });
        let v = self
            .invoke(&request, Action::ProviderCheckSchemaGet, Ok(args))
            .await?;
        Ok(Response::new(pb::GetProviderCheckSchemaResponse {
            check_schema_json: convert::text(&v),
        }))
    }

    async fn register_schema(
        &self,
        request: Request<pb::RegisterSchemaRequest>,
    ) -> Answer<pb::RegisterSchemaResponse> {
        let args = request
            .get_ref()
            .record
            .as_ref()
            .ok_or_else(|| convert::missing("record"))
            .and_then(convert::data_shape_args)
            .map(|record| json!({ "record": record }));
        let mut v = self.invoke(&request, Action::SchemasRegister, args).await?;
        let record: DataShapeRecord = take(&mut v, "record")?;
        Ok(Response::new(pb::RegisterSchemaResponse {
            record: Some(convert::data_shape(record)),
        }))
    }

    async fn list_schemas(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Answer<pb::ListSchemasResponse> {
        let page: Page<DataShapeRecord> = self.page(&request, Action::SchemasList).await?;
        Ok(Response::new(pb::ListSchemasResponse {
            items: page.items.into_iter().map(convert::data_shape).collect(),
            next_token: page.next_token,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<pb::GetSchemaRequest>,
    ) -> Answer<pb::GetSchemaResponse> {
        let r = request.get_ref();
        let args = json!({
            "tenant_id": r.tenant_id,
            "namespace_id": r.namespace_id,
            "schema_id": r.schema_id,
            "version": r.version,
        });
        let mut v = self.invoke(&request, Action::SchemasGet, Ok(args)).await?;
        let record: DataShapeRecord = take(&mut v, "record")?;
        Ok(Response::new(pb::GetSchemaResponse {
            record: Some(convert::data_shape(record)),
        }))
    }

    async fn list_scenarios(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Answer<pb::ListScenariosResponse> {
        let page: Page<ScenarioSummary> = self.page(&request, Action::ScenariosList).await?;
        Ok(Response::new(pb::ListScenariosResponse {
            items: page
                .items
                .into_iter()
                .map(|s| pb::ScenarioSummary {
                    scenario_id: s.scenario_id.to_string(),
                    namespace_id: s.namespace_id.get(),
                    spec_hash: Some(convert::digest(s.spec_hash)),
                })
                .collect(),
            next_token: page.next_token,
        }))
    }

    async fn precheck(
        &self,
        request: Request<pb::PrecheckRequest>,
    ) -> Answer<pb::PrecheckResponse> {
        let r = request.get_ref();
        let args = (|| -> Result<Value, ToolError> {
            let mut args = json!({
                "tenant_id": r.tenant_id,
                "namespace_id": r.namespace_id,
                "scenario_id": r.scenario_id,
                "stage_id": r.stage_id,
            });
            if let Some(evidence) = &r.evidence_json {
                args["evidence"] = convert::json_text(evidence, "evidence_json")?;
            }
            if let Some(shape) = &r.data_shape {
                args["data_shape"] =
                    json!({ "schema_id": shape.schema_id, "version": shape.version });
            }
            if let Some(payload) = &r.payload_json {
                args["payload"] = convert::json_text(payload, "payload_json")?;
            }
            Ok(args)
        })();
        let mut v = self.invoke(&request, Action::Precheck, args).await?;
        Ok(Response::new(pb::PrecheckResponse {
            decision: Some(convert::outcome(take(&mut v, "decision")?)),
            gate_evaluations_json: convert::text(&v["gate_evaluations"]),
        }))
    }

    type WatchRunStream = super::watch::DecisionStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Answer<Self::WatchRunStream> {
        super::watch::watch(self, request).await
    }
}
