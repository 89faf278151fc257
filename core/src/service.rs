//! The service layer: the one place that fixes the order of every call.
//!
//! authorize → quota check → engine step → persist (one atomic append) → usage → audit.
//!
//! Transports (MCP, gRPC) authenticate, build a [`RequestContext`] and call exactly one method
//! here. Enterprise deployments swap the seams; they never branch this logic.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::access::{
    Action, AuditEvent, AuditOutcome, AuditSink, Authorizer, AuthzError, InMemoryAuditSink,
    InMemoryUsageMeter, RequestContext, ScopeAuthorizer, UsageEvent, UsageMeter, UsageMetric,
};
use crate::disclosure::{
    DispatchTarget, Dispatcher, PacketRecord, PolicyDecider, RecordingDispatcher, StaticPolicy,
};
use crate::engine::{self, DisclosureContext, EngineConfig, Plan, Verdict};
use crate::error::Error;
use crate::evidence::{EvidenceContext, EvidenceError, EvidenceResult, TrustLane};
use crate::hashing::HashDigest;
use crate::ids::{
    ConditionId, DecisionId, NamespaceId, RunId, ScenarioId, SchemaId, SchemaVersion, StageId,
    SubmissionId, TenantId, TriggerId,
};
use crate::provider::{EvidenceProvider, ProviderRegistry, RegistryError};
use crate::run::{
    DecisionOutcome, DecisionRecord, EntryBody, GateEvaluation, JournalEntry, RunCounts, RunHead,
    RunKey, RunStatus, SafeSummary, SubmissionEntry, SubmissionRecord, ToolCallRecord,
    TriggerEntry, TriggerEvent, TriggerKind, TriggerRecord, TriggerResult,
};
use crate::runpack::{self, MemoryRunpackStore, RunpackManifest, VerifyOptions, VerifyReport};
use crate::spec::{PacketPayload, ScenarioSpec};
use crate::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, RunpackKey, RunpackStore,
    ScenarioRecord, ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use crate::time::Timestamp;

/// How often a trigger or submission is recomputed when a concurrent call appended first.
const MAX_APPEND_ATTEMPTS: usize = 8;
/// Compiled plans kept in memory.
const PLAN_CACHE_SIZE: usize = 512;

/// The answer to `define_scenario`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefineResult {
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// Its spec digest.
    pub spec_hash: HashDigest,
    /// False when an identical spec was already defined.
    pub created: bool,
}

/// Starts a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// The scenario to run.
    pub scenario_id: ScenarioId,
    /// The new run's id.
    pub run_id: RunId,
    /// Where disclosed packets go.
    #[serde(default)]
    pub dispatch_targets: Vec<DispatchTarget>,
    /// The start time; its kind is the run's time kind.
    pub started_at: Timestamp,
}

/// The answer to `start_run`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartResult {
    /// The new run's head.
    pub run: RunHead,
    /// The start decision.
    pub decision: DecisionRecord,
    /// The first stage's entry packets.
    pub packets: Vec<PacketRecord>,
}

/// An agent asks whether the run may advance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NextRequest {
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The run.
    pub run_id: RunId,
    /// Idempotency key.
    pub trigger_id: TriggerId,
    /// The asking agent.
    pub agent_id: String,
    /// The request time.
    pub time: Timestamp,
}

/// Attaches a submission to a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The run.
    pub run_id: RunId,
    /// Idempotency key within the run.
    pub submission_id: SubmissionId,
    /// The content.
    pub payload: PacketPayload,
    /// Its media type.
    pub content_type: String,
    /// The request time.
    pub submitted_at: Timestamp,
}

/// A run's status: the head's view plus the packets it has disclosed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatusView {
    /// The run.
    pub run_id: RunId,
    /// Its scenario.
    pub scenario_id: ScenarioId,
    /// Its stage.
    pub current_stage_id: StageId,
    /// Its lifecycle state.
    pub status: RunStatus,
    /// Its latest decision.
    pub last_decision: DecisionRecord,
    /// Every packet disclosed so far, in order.
    pub issued_packet_ids: Vec<crate::ids::PacketId>,
    /// Why it holds, when the latest decision is a hold.
    pub safe_summary: Option<SafeSummary>,
    /// Its journal revision.
    pub revision: u64,
}

/// Simulates a stage against caller-supplied evidence, which always counts as `asserted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecheckRequest {
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// The stage; the first when omitted.
    #[serde(default)]
    pub stage_id: Option<StageId>,
    /// Evidence per condition.
    #[serde(default)]
    pub evidence: BTreeMap<ConditionId, EvidenceResult>,
}

/// The answer to `precheck`: the decision the stage would make, and its gates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecheckResult {
    /// The would-be decision.
    pub decision: DecisionOutcome,
    /// Each gate's evaluation.
    pub gate_evaluations: Vec<GateEvaluation>,
}

/// The answer to `export_runpack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportResult {
    /// Where the runpack is stored; `export_id` is derived from its root hash.
    pub key: RunpackKey,
    /// Its manifest.
    pub manifest: RunpackManifest,
    /// The stored manifest's URI.
    pub uri: String,
}

/// Builds a [`DecisionGate`]; every seam not set gets its open-source in-memory default.
#[derive(Default)]
pub struct DecisionGateBuilder {
    config: EngineConfig,
    providers: ProviderRegistry,
    scenarios: Option<Arc<dyn ScenarioStore>>,
    runs: Option<Arc<dyn RunStore>>,
    schemas: Option<Arc<dyn SchemaRegistry>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    usage: Option<Arc<dyn UsageMeter>>,
    audit: Option<Arc<dyn AuditSink>>,
    dispatcher: Option<Arc<dyn Dispatcher>>,
    policy: Option<Arc<dyn PolicyDecider>>,
    runpacks: Option<Arc<dyn RunpackStore>>,
    signer: Option<SigningKey>,
}

impl DecisionGateBuilder {
    /// Where exported runpacks are stored (in memory by default).
    #[must_use]
    pub fn runpack_store(mut self, runpacks: Arc<dyn RunpackStore>) -> Self {
        self.runpacks = Some(runpacks);
        self
    }

    /// Signs every exported runpack's manifest with this ed25519 key.
    #[must_use]
    pub fn runpack_signer(mut self, key: SigningKey) -> Self {
        self.signer = Some(key);
        self
    }

    /// The engine configuration.
    #[must_use]
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers an evidence provider.
    ///
    /// # Errors
    /// [`RegistryError`] for a duplicate id or an invalid contract.
    pub fn provider(mut self, provider: Arc<dyn EvidenceProvider>) -> Result<Self, RegistryError> {
        self.providers.register(provider)?;
        Ok(self)
    }

    /// Uses one backend for scenarios, runs and schemas.
    #[must_use]
    pub fn store<S: ScenarioStore + RunStore + SchemaRegistry + 'static>(
        mut self,
        store: Arc<S>,
    ) -> Self {
        self.scenarios = Some(store.clone());
        self.runs = Some(store.clone());
        self.schemas = Some(store);
        self
    }

    /// The authorizer.
    #[must_use]
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = Some(authorizer);
        self
    }

    /// The usage meter.
    #[must_use]
    pub fn usage_meter(mut self, usage: Arc<dyn UsageMeter>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The audit sink.
    #[must_use]
    pub fn audit_sink(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The packet dispatcher.
    #[must_use]
    pub fn dispatcher(mut self, dispatcher: Arc<dyn Dispatcher>) -> Self {
        self.dispatcher = Some(dispatcher);
        self
    }

    /// The disclosure policy.
    #[must_use]
    pub fn policy(mut self, policy: Arc<dyn PolicyDecider>) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Builds the service.
    #[must_use]
    pub fn build(self) -> DecisionGate {
        let memory = Arc::new(crate::memory::MemoryStore::default());
        DecisionGate {
            config: self.config,
            providers: self.providers,
            scenarios: self.scenarios.unwrap_or_else(|| memory.clone()),
            runs: self.runs.unwrap_or_else(|| memory.clone()),
            schemas: self.schemas.unwrap_or(memory),
            authorizer: self.authorizer.unwrap_or_else(|| Arc::new(ScopeAuthorizer)),
            usage: self
                .usage
                .unwrap_or_else(|| Arc::new(InMemoryUsageMeter::default())),
            audit: self
                .audit
                .unwrap_or_else(|| Arc::new(InMemoryAuditSink::default())),
            dispatcher: self
                .dispatcher
                .unwrap_or_else(|| Arc::new(RecordingDispatcher)),
            policy: self
                .policy
                .unwrap_or_else(|| Arc::new(StaticPolicy::permit_all())),
            runpacks: self
                .runpacks
                .unwrap_or_else(|| Arc::new(MemoryRunpackStore::default())),
            signer: self.signer,
            plans: Mutex::new(LruCache::new(
                NonZeroUsize::new(PLAN_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
            call_seq: AtomicU64::new(0),
        }
    }
}

/// The Decision Gate service.
pub struct DecisionGate {
    config: EngineConfig,
    providers: ProviderRegistry,
    scenarios: Arc<dyn ScenarioStore>,
    runs: Arc<dyn RunStore>,
    schemas: Arc<dyn SchemaRegistry>,
    authorizer: Arc<dyn Authorizer>,
    usage: Arc<dyn UsageMeter>,
    audit: Arc<dyn AuditSink>,
    dispatcher: Arc<dyn Dispatcher>,
    policy: Arc<dyn PolicyDecider>,
    runpacks: Arc<dyn RunpackStore>,
    signer: Option<SigningKey>,
    plans: Mutex<LruCache<(TenantId, NamespaceId, ScenarioId), Arc<Plan>>>,
    call_seq: AtomicU64,
}

impl std::fmt::Debug for DecisionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionGate")
            .field("config", &self.config)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

/// An authorized call in progress: what to audit and meter when it ends.
struct Call {
    action: Action,
    resource: String,
    request_hash: Option<HashDigest>,
    effects: Effects,
}

/// Whether a call's effects were committed by the store together with its write.
type Committed = bool;

impl DecisionGate {
    /// A builder with in-memory defaults.
    #[must_use]
    pub fn builder() -> DecisionGateBuilder {
        DecisionGateBuilder::default()
    }

    /// The engine configuration.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The registered providers.
    #[must_use]
    pub fn providers(&self) -> &ProviderRegistry {
        &self.providers
    }

    // ---- call bracket ---------------------------------------------------------------------------

    /// Runs one service call inside the bracket: authorize and quota-check, run `op` with the
    /// call's effects, then meter and audit (or audit the failure).
    async fn call<T>(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: (&'static str, String),
        request_hash: Option<HashDigest>,
        usage: Vec<(UsageMetric, u64)>,
        op: impl AsyncFnOnce(&Effects) -> Result<(T, Committed), Error>,
    ) -> Result<T, Error> {
        let call = self
            .begin(ctx, action, resource, request_hash, usage)
            .await?;
        let result = op(&call.effects).await;
        self.finish(ctx, call, result).await
    }

    /// The digest of a request, for the audit trail.
    fn hash_request(&self, request: &impl Serialize) -> Option<HashDigest> {
        self.config.hash_algorithm.digest_json(request).ok()
    }

    /// Authorizes and quota-checks a call. Refusals are audited here.
    async fn begin(
        &self,
        ctx: &RequestContext,
        action: Action,
        (what, id): (&'static str, String),
        request_hash: Option<HashDigest>,
        mut usage: Vec<(UsageMetric, u64)>,
    ) -> Result<Call, Error> {
        let seq = self.call_seq.fetch_add(1, Ordering::Relaxed);
        let key = ctx
            .request_id
            .clone()
            .unwrap_or_else(|| format!("local-{seq}"));
        usage.insert(0, (UsageMetric::ToolCalls, 1));
        let usage = usage
            .into_iter()
            .map(|(metric, quantity)| UsageEvent {
                tenant_id: ctx.tenant_id,
                namespace_id: ctx.namespace_id,
                metric,
                quantity,
                idempotency_key: format!("{key}/{}/{metric:?}", action.name()),
            })
            .collect::<Vec<_>>();
        let resource = format!("{what}/{id}");
        let mut call = Call {
            action,
            resource,
            request_hash,
            effects: Effects {
                usage,
                audit: Vec::new(),
            },
        };
        let refused = match self.authorizer.authorize(ctx, action).await {
            Err(AuthzError::OutOfScope) => Some(Error::NotFound { what, id }),
            Err(e) => Some(Error::from(e)),
            Ok(()) => self
                .usage
                .check(&call.effects.usage)
                .await
                .err()
                .map(Error::from),
        };
        if let Some(error) = refused {
            self.audit
                .append(&[self.event(
                    ctx,
                    &call,
                    AuditOutcome::Failure {
                        kind: error.kind().to_owned(),
                    },
                )])
                .await?;
            return Err(error);
        }
        call.effects
            .audit
            .push(self.event(ctx, &call, AuditOutcome::Success));
        Ok(call)
    }

    /// Ends a call: meters and audits a success the store did not commit, audits a failure.
    async fn finish<T>(
        &self,
        ctx: &RequestContext,
        call: Call,
        result: Result<(T, Committed), Error>,
    ) -> Result<T, Error> {
        match result {
            Ok((value, true)) => Ok(value),
            Ok((value, false)) => {
                self.usage.record(&call.effects.usage).await?;
                self.audit.append(&call.effects.audit).await?;
                Ok(value)
            }
            Err(error) => {
                self.audit
                    .append(&[self.event(
                        ctx,
                        &call,
                        AuditOutcome::Failure {
                            kind: error.kind().to_owned(),
                        },
                    )])
                    .await?;
                Err(error)
            }
        }
    }

    fn event(&self, ctx: &RequestContext, call: &Call, outcome: AuditOutcome) -> AuditEvent {
        AuditEvent {
            principal: ctx.principal.subject.clone(),
            action: call.action,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            resource: call.resource.clone(),
            outcome,
            request_id: ctx.request_id.clone(),
            correlation_id: ctx.correlation_id.clone(),
            request_hash: call.request_hash.clone(),
        }
    }

    fn run_key(ctx: &RequestContext, run_id: &RunId) -> RunKey {
        RunKey {
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: run_id.clone(),
        }
    }

    // ---- scenarios ------------------------------------------------------------------------------

    /// Parses a scenario spec from JSON text and defines it.
    ///
    /// # Errors
    /// As [`Self::define_scenario`], plus [`Error::InvalidSpec`] for malformed JSON, unknown
    /// fields or a document over the size limit, naming the JSON path.
    pub async fn define_scenario_json(
        &self,
        ctx: &RequestContext,
        text: &str,
    ) -> Result<DefineResult, Error> {
        let spec = engine::parse_json::<ScenarioSpec>(text, self.config.limits.max_spec_bytes)
            .map_err(|e| Error::InvalidSpec(vec![e]))?;
        self.define_scenario(ctx, spec).await
    }

    /// Validates a spec, compiles it and stores it under the caller's tenant and namespace.
    /// Defining an identical spec again changes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] listing every broken rule; [`Error::AlreadyExists`] when the id
    /// holds a different spec.
    pub async fn define_scenario(
        &self,
        ctx: &RequestContext,
        spec: ScenarioSpec,
    ) -> Result<DefineResult, Error> {
        let request_hash = self.hash_request(&spec);
        self.call(
            ctx,
            Action::ScenarioDefine,
            ("scenario", spec.scenario_id.to_string()),
            request_hash,
            Vec::new(),
            async move |effects| self.define_inner(ctx, spec, effects).await,
        )
        .await
    }

    async fn define_inner(
        &self,
        ctx: &RequestContext,
        spec: ScenarioSpec,
        effects: &Effects,
    ) -> Result<(DefineResult, Committed), Error> {
        if spec.namespace_id != ctx.namespace_id {
            return Err(Error::invalid(
                "namespace_id",
                format!(
                    "spec is for namespace {}, request is for {}",
                    spec.namespace_id, ctx.namespace_id
                ),
            ));
        }
        let errors = engine::validate_spec(
            &spec,
            Some(ctx.tenant_id),
            Some(&self.providers),
            &self.config.limits,
        );
        if !errors.is_empty() {
            return Err(Error::InvalidSpec(errors));
        }
        let plan = Arc::new(
            Plan::compile(spec.clone(), self.config.hash_algorithm)
                .map_err(|e| Error::InvalidSpec(vec![e]))?,
        );
        let record = ScenarioRecord {
            tenant_id: ctx.tenant_id,
            spec,
            spec_hash: plan.spec_hash().clone(),
        };
        let outcome = self.scenarios.put(&record, effects).await?;
        let scenario_id = record.spec.scenario_id.clone();
        self.cache_plan(ctx.tenant_id, ctx.namespace_id, &scenario_id, plan);
        let result = DefineResult {
            scenario_id,
            spec_hash: record.spec_hash,
            created: outcome == PutOutcome::Created,
        };
        Ok((result, self.scenarios.owns_effects()))
    }

    /// Lists the scenarios of the caller's namespace.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad cursor or limit.
    pub async fn list_scenarios(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<ScenarioSummary>, Error> {
        let request_hash = self.hash_request(&page);
        self.call(
            ctx,
            Action::ScenariosList,
            ("namespace", ctx.namespace_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                self.scenarios
                    .list(ctx.tenant_id, ctx.namespace_id, &page)
                    .await
                    .map(|p| (p, false))
                    .map_err(Error::from)
            },
        )
        .await
    }

    fn cache_plan(
        &self,
        tenant: TenantId,
        namespace: NamespaceId,
        scenario: &ScenarioId,
        plan: Arc<Plan>,
    ) {
        if let Ok(mut plans) = self.plans.lock() {
            plans.put((tenant, namespace, scenario.clone()), plan);
        }
    }

    /// The compiled plan of a scenario, from the cache or the store; `expected` pins the hash.
    async fn plan(
        &self,
        tenant: TenantId,
        namespace: NamespaceId,
        scenario_id: &ScenarioId,
        expected: Option<&HashDigest>,
    ) -> Result<Arc<Plan>, Error> {
        let key = (tenant, namespace, scenario_id.clone());
        let cached = self
            .plans
            .lock()
            .ok()
            .and_then(|mut p| p.get(&key).cloned());
        if let Some(plan) = cached.filter(|p| expected.is_none_or(|h| p.spec_hash() == h)) {
            return Ok(plan);
        }
        let record = self
            .scenarios
            .get(tenant, namespace, scenario_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "scenario",
                id: scenario_id.to_string(),
            })?;
        let plan = Plan::compile(record.spec, self.config.hash_algorithm)
            .map_err(|e| Error::Corrupt(format!("stored scenario {scenario_id}: {e}")))?;
        if plan.spec_hash() != &record.spec_hash || expected.is_some_and(|h| h != plan.spec_hash())
        {
            return Err(Error::Corrupt(format!(
                "scenario {scenario_id}: spec hash does not match the stored spec"
            )));
        }
        let plan = Arc::new(plan);
        self.cache_plan(tenant, namespace, scenario_id, plan.clone());
        Ok(plan)
    }

    // ---- runs -----------------------------------------------------------------------------------

    /// Starts a run: records the start trigger and decision and issues the first stage's entry
    /// packets, all in the run's first journal entry.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown scenario, [`Error::AlreadyExists`] for a taken run id,
    /// [`Error::PermissionDenied`] when the disclosure policy refuses the first packets (nothing
    /// is stored).
    pub async fn start_run(
        &self,
        ctx: &RequestContext,
        req: StartRequest,
    ) -> Result<StartResult, Error> {
        let request_hash = self.hash_request(&req);
        self.call(
            ctx,
            Action::ScenarioStart,
            ("run", req.run_id.to_string()),
            request_hash,
            vec![(UsageMetric::RunsStarted, 1)],
            async move |effects| self.start_inner(ctx, req, effects).await,
        )
        .await
    }

    async fn start_inner(
        &self,
        ctx: &RequestContext,
        req: StartRequest,
        effects: &Effects,
    ) -> Result<(StartResult, Committed), Error> {
        let plan = self
            .plan(ctx.tenant_id, ctx.namespace_id, &req.scenario_id, None)
            .await?;
        let first = &plan.spec().stages[0];
        let trigger_id = TriggerId::new("init").map_err(|e| Error::Corrupt(e.to_string()))?;
        let decision_id = decision_id(1)?;
        let packets = engine::issue_packets(
            &plan,
            0,
            DisclosureContext {
                run_id: &req.run_id,
                decision_id: &decision_id,
                issued_at: req.started_at,
                correlation_id: ctx.correlation_id.as_ref(),
                targets: &req.dispatch_targets,
            },
            self.config.hash_algorithm,
            self.policy.as_ref(),
            self.dispatcher.as_ref(),
        )
        .await
        .map_err(|f| {
            if f.denied {
                Error::PermissionDenied(f.reason)
            } else {
                Error::Unavailable(f.reason)
            }
        })?;
        let decision = DecisionRecord {
            decision_id,
            seq: 1,
            trigger_id: trigger_id.clone(),
            stage_id: first.stage_id.clone(),
            decided_at: req.started_at,
            outcome: DecisionOutcome::Start {
                stage_id: first.stage_id.clone(),
            },
            correlation_id: ctx.correlation_id.clone(),
        };
        let key = Self::run_key(ctx, &req.run_id);
        let event = TriggerEvent {
            trigger_id,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: req.run_id.clone(),
            kind: TriggerKind::ExternalEvent,
            time: req.started_at,
            source_id: "system".to_owned(),
            payload: None,
            correlation_id: ctx.correlation_id.clone(),
        };
        let head = RunHead {
            key,
            scenario_id: req.scenario_id.clone(),
            spec_hash: plan.spec_hash().clone(),
            current_stage_id: first.stage_id.clone(),
            stage_entered_at: req.started_at,
            status: RunStatus::Active,
            dispatch_targets: req.dispatch_targets,
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
        let entry = JournalEntry {
            revision: 1,
            body: EntryBody::Trigger(Box::new(TriggerEntry {
                trigger: TriggerRecord { seq: 1, event },
                gate_evals: Vec::new(),
                decision: decision.clone(),
                packets: packets.clone(),
                tool_call: None,
            })),
        };
        self.runs.create(&head, &entry, effects).await?;
        Ok((
            StartResult {
                run: head,
                decision,
                packets,
            },
            self.runs.owns_effects(),
        ))
    }

    /// An agent's request for the next decision (a trigger of kind `agent_request_next`).
    ///
    /// # Errors
    /// As [`Self::trigger`].
    pub async fn next(
        &self,
        ctx: &RequestContext,
        req: NextRequest,
    ) -> Result<TriggerResult, Error> {
        let request_hash = self.hash_request(&req);
        let event = TriggerEvent {
            trigger_id: req.trigger_id,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: req.run_id,
            kind: TriggerKind::AgentRequestNext,
            time: req.time,
            source_id: req.agent_id,
            payload: None,
            correlation_id: ctx.correlation_id.clone(),
        };
        let resource = ("run", event.run_id.to_string());
        self.call(
            ctx,
            Action::ScenarioNext,
            resource,
            request_hash,
            Vec::new(),
            async move |effects| {
                self.decide_trigger(ctx, &req.scenario_id, event, "scenario.next", effects)
                    .await
            },
        )
        .await
    }

    /// Decides a trigger. Each trigger id is decided once: a repeated id returns the recorded
    /// decision and packets with the current status, whatever its payload. A trigger on a
    /// finished run returns the final decision. Nothing is written in either case.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run, [`Error::InvalidInput`] when the trigger's tenant,
    /// namespace or time kind does not match the run, [`Error::TooLarge`] for an oversized
    /// payload, [`Error::Conflict`] when the run stays too busy to append.
    pub async fn trigger(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        event: TriggerEvent,
    ) -> Result<TriggerResult, Error> {
        let request_hash = self.hash_request(&event);
        let resource = ("run", event.run_id.to_string());
        self.call(
            ctx,
            Action::ScenarioTrigger,
            resource,
            request_hash,
            Vec::new(),
            async move |effects| {
                self.decide_trigger(ctx, scenario_id, event, "scenario.trigger", effects)
                    .await
            },
        )
        .await
    }

    async fn load_head(&self, key: &RunKey, scenario_id: &ScenarioId) -> Result<RunHead, Error> {
        self.runs
            .head(key)
            .await?
            .filter(|h| &h.scenario_id == scenario_id)
            .ok_or_else(|| Error::NotFound {
                what: "run",
                id: key.run_id.to_string(),
            })
    }

    async fn recorded_result(
        &self,
        key: &RunKey,
        trigger_id: &TriggerId,
        status: RunStatus,
    ) -> Result<TriggerResult, Error> {
        let entry = self.runs.entry_for_trigger(key, trigger_id).await?;
        trigger_result(key, trigger_id, entry, status)
    }

    async fn decide_trigger(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        event: TriggerEvent,
        method: &str,
        effects: &Effects,
    ) -> Result<(TriggerResult, Committed), Error> {
        if event.tenant_id != ctx.tenant_id || event.namespace_id != ctx.namespace_id {
            return Err(Error::invalid(
                "trigger.tenant_id",
                "the trigger's tenant and namespace must be the request's",
            ));
        }
        if let Some(payload) = &event.payload {
            check_payload(
                payload,
                "trigger.payload",
                self.config.limits.max_payload_bytes,
            )?;
        }
        let key = Self::run_key(ctx, &event.run_id);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let head = self.load_head(&key, scenario_id).await?;
            if head.status != RunStatus::Active {
                return Ok((
                    self.recorded_result(&key, &head.last_decision.trigger_id, head.status)
                        .await?,
                    false,
                ));
            }
            if let Some(entry) = self.runs.entry_for_trigger(&key, &event.trigger_id).await? {
                return Ok((
                    trigger_result(&key, &event.trigger_id, Some(entry), head.status)?,
                    false,
                ));
            }
            if event.time.kind() != head.stage_entered_at.kind() {
                return Err(Error::invalid(
                    "time",
                    format!(
                        "the run uses {} timestamps, the trigger sent {}",
                        head.stage_entered_at.kind(),
                        event.time.kind()
                    ),
                ));
            }
            let (new_head, entry, result) = self.step(&head, &event, method).await?;
            match self
                .runs
                .append(head.revision, &new_head, &entry, effects)
                .await
            {
                Ok(()) => return Ok((result, self.runs.owns_effects())),
                // Another call appended first: re-read and decide again (or replay).
                Err(StoreError::RevisionConflict { .. } | StoreError::DuplicateKey { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "run {} is too busy; retry the trigger",
            key.run_id
        )))
    }

    /// One engine step: evidence, gates, decision, disclosure, and the entry that records them.
    async fn step(
        &self,
        head: &RunHead,
        event: &TriggerEvent,
        method: &str,
    ) -> Result<(RunHead, JournalEntry, TriggerResult), Error> {
        let plan = self
            .plan(
                head.key.tenant_id,
                head.key.namespace_id,
                &head.scenario_id,
                Some(&head.spec_hash),
            )
            .await?;
        let stage = plan.stage_index(&head.current_stage_id).ok_or_else(|| {
            Error::Corrupt(format!(
                "run {} is in unknown stage {}",
                head.key.run_id, head.current_stage_id
            ))
        })?;
        let stage_spec = &plan.spec().stages[stage];
        let timed_out = match (&stage_spec.timeout, event.kind) {
            (Some(timeout), TriggerKind::Tick) => {
                let deadline = head
                    .stage_entered_at
                    .checked_add_millis(timeout.timeout_ms)
                    .ok_or_else(|| {
                        Error::invalid("time", "stage deadline overflows the timestamp range")
                    })?;
                event.time.at_or_after(deadline).unwrap_or(false)
            }
            _ => false,
        };
        let (gate_evals, verdict) = if timed_out {
            (
                Vec::new(),
                engine::decide_timeout(&plan, stage, stage_spec.on_timeout),
            )
        } else {
            let results = self.gather_evidence(&plan, stage, head, event).await;
            let outcome = plan.evaluate_stage(stage, results, &self.config, &event.trigger_id);
            let verdict = engine::decide(&plan, stage, &outcome.statuses());
            (outcome.gate_records, verdict)
        };

        let decision_seq = head.counts.decisions + 1;
        let decision_id = decision_id(decision_seq)?;
        let mut new_head = head.clone();
        let mut packets = Vec::new();
        let outcome = match verdict {
            Verdict::Advance { to, timeout } => {
                let to_stage = plan.spec().stages[to].stage_id.clone();
                let disclosure = DisclosureContext {
                    run_id: &head.key.run_id,
                    decision_id: &decision_id,
                    issued_at: event.time,
                    correlation_id: event.correlation_id.as_ref(),
                    targets: &head.dispatch_targets,
                };
                match engine::issue_packets(
                    &plan,
                    to,
                    disclosure,
                    self.config.hash_algorithm,
                    self.policy.as_ref(),
                    self.dispatcher.as_ref(),
                )
                .await
                {
                    Ok(issued) => {
                        packets = issued;
                        new_head.current_stage_id = to_stage.clone();
                        new_head.stage_entered_at = event.time;
                        DecisionOutcome::Advance {
                            from_stage: head.current_stage_id.clone(),
                            to_stage,
                            timeout,
                        }
                    }
                    Err(failure) => {
                        new_head.status = RunStatus::Failed;
                        DecisionOutcome::Fail {
                            reason: failure.reason,
                        }
                    }
                }
            }
            Verdict::Complete => {
                new_head.status = RunStatus::Completed;
                DecisionOutcome::Complete {
                    stage_id: head.current_stage_id.clone(),
                }
            }
            Verdict::Hold(summary) => DecisionOutcome::Hold { summary },
            Verdict::Fail(reason) => {
                new_head.status = RunStatus::Failed;
                DecisionOutcome::Fail { reason }
            }
        };
        let decision = DecisionRecord {
            decision_id,
            seq: decision_seq,
            trigger_id: event.trigger_id.clone(),
            stage_id: head.current_stage_id.clone(),
            decided_at: event.time,
            outcome,
            correlation_id: event.correlation_id.clone(),
        };
        let result = TriggerResult {
            decision: decision.clone(),
            packets: packets.clone(),
            status: new_head.status,
        };
        let tool_call = self.tool_call(
            head,
            method,
            event,
            &result,
            event.time,
            event.correlation_id.clone(),
        )?;
        new_head.revision += 1;
        new_head.counts.triggers += 1;
        new_head.counts.decisions += 1;
        new_head.counts.packets += packets.len() as u64;
        new_head.counts.tool_calls += 1;
        new_head.last_decision = decision.clone();
        let entry = JournalEntry {
            revision: new_head.revision,
            body: EntryBody::Trigger(Box::new(TriggerEntry {
                trigger: TriggerRecord {
                    seq: new_head.counts.triggers,
                    event: event.clone(),
                },
                gate_evals,
                decision,
                packets,
                tool_call: Some(tool_call),
            })),
        };
        Ok((new_head, entry, result))
    }

    fn tool_call(
        &self,
        head: &RunHead,
        method: &str,
        request: &impl Serialize,
        response: &impl Serialize,
        called_at: Timestamp,
        correlation_id: Option<crate::ids::CorrelationId>,
    ) -> Result<ToolCallRecord, Error> {
        let alg = self.config.hash_algorithm;
        Ok(ToolCallRecord {
            call_id: format!("call-{}", head.counts.tool_calls + 1),
            method: method.to_owned(),
            request_hash: alg
                .digest_json(request)
                .map_err(|e| Error::invalid("request", e.to_string()))?,
            response_hash: alg
                .digest_json(response)
                .map_err(|e| Error::invalid("response", e.to_string()))?,
            called_at,
            correlation_id,
            error: None,
        })
    }

    /// Queries every condition of the stage once, concurrently, in the configured order; a
    /// provider failure becomes an evidence error, never a trigger failure.
    async fn gather_evidence(
        &self,
        plan: &Plan,
        stage: usize,
        head: &RunHead,
        event: &TriggerEvent,
    ) -> Vec<EvidenceResult> {
        let ctx = EvidenceContext {
            tenant_id: head.key.tenant_id,
            namespace_id: head.key.namespace_id,
            run_id: head.key.run_id.clone(),
            scenario_id: head.scenario_id.clone(),
            stage_id: head.current_stage_id.clone(),
            trigger_id: event.trigger_id.clone(),
            trigger_time: event.time,
            correlation_id: event.correlation_id.clone(),
        };
        let queries: Vec<_> = plan.stage_conditions(stage).map(|(_, q)| q).collect();
        let order = plan.query_order(stage, self.config.condition_order);
        let ctx = &ctx;
        let futures = order.iter().map(|&slot| {
            let query = queries[slot];
            async move {
                let answer = match self.providers.get(&query.provider_id) {
                    None => EvidenceResult::failed(EvidenceError::new(
                        "provider_missing",
                        format!("provider {} is not registered", query.provider_id),
                    )),
                    Some(provider) => provider.query(query, ctx).await.unwrap_or_else(|e| {
                        EvidenceResult::failed(EvidenceError::new("provider_error", e.to_string()))
                    }),
                };
                (slot, answer)
            }
        });
        let mut by_slot: Vec<Option<EvidenceResult>> = vec![None; queries.len()];
        for (slot, answer) in futures::future::join_all(futures).await {
            by_slot[slot] = Some(answer);
        }
        by_slot
            .into_iter()
            .map(|r| r.unwrap_or_else(|| EvidenceResult::empty(TrustLane::Verified)))
            .collect()
    }

    /// Attaches a submission to a run. The same id with the same content returns the recorded
    /// submission; with different content it is a conflict.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::TooLarge`], [`Error::Conflict`].
    pub async fn submit(
        &self,
        ctx: &RequestContext,
        req: SubmitRequest,
    ) -> Result<SubmissionRecord, Error> {
        let request_hash = self.hash_request(&req);
        self.call(
            ctx,
            Action::ScenarioSubmit,
            ("run", req.run_id.to_string()),
            request_hash,
            Vec::new(),
            async move |effects| self.submit_inner(ctx, req, effects).await,
        )
        .await
    }

    async fn submit_inner(
        &self,
        ctx: &RequestContext,
        req: SubmitRequest,
        effects: &Effects,
    ) -> Result<(SubmissionRecord, Committed), Error> {
        check_payload(
            &req.payload,
            "payload",
            self.config.limits.max_payload_bytes,
        )?;
        let key = Self::run_key(ctx, &req.run_id);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let head = self.load_head(&key, &req.scenario_id).await?;
            if let Some(entry) = self
                .runs
                .entry_for_submission(&key, &req.submission_id)
                .await?
            {
                let EntryBody::Submission(existing) = entry.body else {
                    return Err(Error::Corrupt(format!(
                        "run {}: submission entry of the wrong kind",
                        key.run_id
                    )));
                };
                if existing.submission.payload == req.payload
                    && existing.submission.content_type == req.content_type
                {
                    return Ok((existing.submission, false));
                }
                return Err(Error::Conflict(format!(
                    "submission_id {} already holds a different payload",
                    req.submission_id
                )));
            }
            let content_hash = req
                .payload
                .content_hash(self.config.hash_algorithm)
                .map_err(|e| Error::invalid("payload", e.to_string()))?;
            let submission = SubmissionRecord {
                submission_id: req.submission_id.clone(),
                run_id: req.run_id.clone(),
                payload: req.payload.clone(),
                content_type: req.content_type.clone(),
                content_hash,
                submitted_at: req.submitted_at,
                correlation_id: ctx.correlation_id.clone(),
            };
            let tool_call = self.tool_call(
                &head,
                "scenario.submit",
                &req,
                &submission,
                req.submitted_at,
                ctx.correlation_id.clone(),
            )?;
            let mut new_head = head.clone();
            new_head.revision += 1;
            new_head.counts.submissions += 1;
            new_head.counts.tool_calls += 1;
            let entry = JournalEntry {
                revision: new_head.revision,
                body: EntryBody::Submission(Box::new(SubmissionEntry {
                    submission: submission.clone(),
                    tool_call,
                })),
            };
            match self
                .runs
                .append(head.revision, &new_head, &entry, effects)
                .await
            {
                Ok(()) => return Ok((submission, self.runs.owns_effects())),
                Err(StoreError::RevisionConflict { .. } | StoreError::DuplicateKey { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "run {} is too busy; retry the submission",
            key.run_id
        )))
    }

    /// A run's status. Read-only: it writes nothing to the run.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn status(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
    ) -> Result<RunStatusView, Error> {
        self.call(
            ctx,
            Action::ScenarioStatus,
            ("run", run_id.to_string()),
            None,
            Vec::new(),
            async move |_| {
                let key = Self::run_key(ctx, run_id);
                let head = self.load_head(&key, scenario_id).await?;
                let mut issued_packet_ids = Vec::new();
                if head.counts.packets > 0 {
                    self.for_each_entry(&key, head.revision, |entry| {
                        if let EntryBody::Trigger(t) = &entry.body {
                            issued_packet_ids
                                .extend(t.packets.iter().map(|p| p.envelope.packet_id.clone()));
                        }
                    })
                    .await?;
                }
                let safe_summary = match &head.last_decision.outcome {
                    DecisionOutcome::Hold { summary } => Some(summary.clone()),
                    _ => None,
                };
                Ok((
                    RunStatusView {
                        run_id: head.key.run_id.clone(),
                        scenario_id: head.scenario_id.clone(),
                        current_stage_id: head.current_stage_id.clone(),
                        status: head.status,
                        last_decision: head.last_decision.clone(),
                        issued_packet_ids,
                        safe_summary,
                        revision: head.revision,
                    },
                    false,
                ))
            },
        )
        .await
    }

    /// A page of a run's journal: entries after revision `after`, ascending.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::InvalidInput`] for a limit outside 1..=1000.
    pub async fn journal(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<JournalEntry>, Error> {
        self.call(
            ctx,
            Action::ScenarioStatus,
            ("run", run_id.to_string()),
            None,
            Vec::new(),
            async move |_| {
                PageRequest::first(limit).check()?;
                let key = Self::run_key(ctx, run_id);
                self.load_head(&key, scenario_id).await?;
                Ok((self.runs.entries(&key, after, limit).await?, false))
            },
        )
        .await
    }

    async fn for_each_entry(
        &self,
        key: &RunKey,
        up_to: u64,
        mut f: impl FnMut(&JournalEntry),
    ) -> Result<(), Error> {
        let mut after = 0;
        while after < up_to {
            let page = self
                .runs
                .entries(key, after, crate::store::MAX_PAGE_SIZE)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.revision;
            page.iter().filter(|e| e.revision <= up_to).for_each(&mut f);
        }
        Ok(())
    }

    /// Evaluates a stage against caller-supplied evidence without touching any run. The
    /// evidence always counts as `asserted`, whatever lane it claims.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown scenario, [`Error::InvalidInput`] for an unknown stage.
    pub async fn precheck(
        &self,
        ctx: &RequestContext,
        req: PrecheckRequest,
    ) -> Result<PrecheckResult, Error> {
        let request_hash = self.hash_request(&req);
        self.call(
            ctx,
            Action::Precheck,
            ("scenario", req.scenario_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                let plan = self
                    .plan(ctx.tenant_id, ctx.namespace_id, &req.scenario_id, None)
                    .await?;
                let stage = match &req.stage_id {
                    None => 0,
                    Some(id) => plan
                        .stage_index(id)
                        .ok_or_else(|| Error::invalid("stage_id", format!("unknown stage {id}")))?,
                };
                let results = plan
                    .stage_conditions(stage)
                    .map(|(id, _)| {
                        req.evidence
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| EvidenceResult::empty(TrustLane::Asserted))
                            .with_lane(TrustLane::Asserted)
                    })
                    .collect();
                let trigger_id =
                    TriggerId::new("precheck").map_err(|e| Error::Corrupt(e.to_string()))?;
                let outcome = plan.evaluate_stage(stage, results, &self.config, &trigger_id);
                let stage_id = plan.spec().stages[stage].stage_id.clone();
                let decision = match engine::decide(&plan, stage, &outcome.statuses()) {
                    Verdict::Advance { to, timeout } => DecisionOutcome::Advance {
                        from_stage: stage_id,
                        to_stage: plan.spec().stages[to].stage_id.clone(),
                        timeout,
                    },
                    Verdict::Complete => DecisionOutcome::Complete { stage_id },
                    Verdict::Hold(summary) => DecisionOutcome::Hold { summary },
                    Verdict::Fail(reason) => DecisionOutcome::Fail { reason },
                };
                let gate_evaluations = outcome
                    .gate_records
                    .into_iter()
                    .map(|r| r.evaluation)
                    .collect();
                Ok((
                    PrecheckResult {
                        decision,
                        gate_evaluations,
                    },
                    false,
                ))
            },
        )
        .await
    }

    // ---- runpacks -------------------------------------------------------------------------------

    /// Exports a run as a runpack through the runpack store: the artifacts first, the manifest
    /// (and its signature) last, so a reader never finds a manifest whose files are missing. The
    /// export id is derived from the revision and root hash, so exporting unchanged content again
    /// writes the same files.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown run, [`Error::Unavailable`] when the store fails,
    /// [`Error::Corrupt`] when the run does not match its spec.
    pub async fn export_runpack(
        &self,
        ctx: &RequestContext,
        scenario_id: &ScenarioId,
        run_id: &RunId,
        generated_at: Timestamp,
    ) -> Result<ExportResult, Error> {
        let usage = vec![(UsageMetric::RunpackExports, 1)];
        let resource = ("run", run_id.to_string());
        self.call(
            ctx,
            Action::RunpackExport,
            resource,
            None,
            usage,
            async move |_| {
                let key = Self::run_key(ctx, run_id);
                let head = self.load_head(&key, scenario_id).await?;
                let plan = self
                    .plan(
                        ctx.tenant_id,
                        ctx.namespace_id,
                        scenario_id,
                        Some(&head.spec_hash),
                    )
                    .await?;
                let mut entries = Vec::new();
                self.for_each_entry(&key, head.revision, |e| entries.push(e.clone()))
                    .await?;
                let input = runpack::ExportInput {
                    spec: plan.spec(),
                    head: &head,
                    entries: &entries,
                    generated_at,
                    config: &self.config,
                    signer: self.signer.as_ref(),
                };
                let pack = runpack::export(&input).map_err(|e| Error::Corrupt(e.to_string()))?;
                let root = &pack.manifest.integrity.root_hash.value;
                let export_id = format!("rev{}-{}", head.revision, &root[..root.len().min(16)]);
                let key = RunpackKey {
                    run: key,
                    export_id,
                };
                let last = [runpack::SIGNATURE_PATH, runpack::MANIFEST_PATH];
                for (path, bytes) in pack
                    .files
                    .iter()
                    .filter(|(p, _)| !last.contains(&p.as_str()))
                {
                    self.runpacks.put_file(&key, path, bytes).await?;
                }
                let mut uri = String::new();
                for path in last {
                    if let Some(bytes) = pack.files.get(path) {
                        uri = self.runpacks.put_file(&key, path, bytes).await?;
                    }
                }
                Ok((
                    ExportResult {
                        key,
                        manifest: pack.manifest,
                        uri,
                    },
                    false,
                ))
            },
        )
        .await
    }

    /// Verifies a stored runpack of a run in the caller's scope.
    ///
    /// # Errors
    /// [`Error::NotFound`] when no such runpack is stored, [`Error::Unavailable`] when the store
    /// fails. A runpack that fails verification is a report with failures, not an error.
    pub async fn verify_runpack(
        &self,
        ctx: &RequestContext,
        run_id: &RunId,
        export_id: &str,
        options: &VerifyOptions,
    ) -> Result<VerifyReport, Error> {
        let resource = ("runpack", format!("{run_id}/{export_id}"));
        self.call(
            ctx,
            Action::RunpackVerify,
            resource,
            None,
            Vec::new(),
            async move |_| {
                let key = RunpackKey {
                    run: Self::run_key(ctx, run_id),
                    export_id: export_id.to_owned(),
                };
                let mut files = BTreeMap::new();
                for path in self.runpacks.list_files(&key).await? {
                    if let Some(bytes) = self.runpacks.get_file(&key, &path).await? {
                        files.insert(path, bytes);
                    }
                }
                if files.is_empty() {
                    return Err(Error::NotFound {
                        what: "runpack",
                        id: format!("{run_id}/{export_id}"),
                    });
                }
                Ok((
                    runpack::verify(&runpack::files_reader(&files), options),
                    false,
                ))
            },
        )
        .await
    }

    // ---- schemas --------------------------------------------------------------------------------

    /// Registers an immutable data shape after checking it is a valid JSON Schema 2020-12
    /// within the size limit.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the schema problem, [`Error::TooLarge`],
    /// [`Error::AlreadyExists`].
    pub async fn register_schema(
        &self,
        ctx: &RequestContext,
        record: DataShapeRecord,
    ) -> Result<DataShapeRecord, Error> {
        let size = serde_json::to_vec(&record.schema).map_or(0, |v| v.len() as u64);
        let usage = vec![
            (UsageMetric::SchemasWritten, 1),
            (UsageMetric::RegistryEntries, 1),
            (UsageMetric::StorageBytes, size),
        ];
        let id = format!("{}@{}", record.schema_id, record.version);
        let request_hash = self.hash_request(&record);
        self.call(
            ctx,
            Action::SchemasRegister,
            ("schema", id),
            request_hash,
            usage,
            async move |effects| {
                if record.tenant_id != ctx.tenant_id || record.namespace_id != ctx.namespace_id {
                    return Err(Error::invalid(
                        "record.tenant_id",
                        "the record's tenant and namespace must be the request's",
                    ));
                }
                crate::schema::check_data_shape(
                    &record.schema,
                    self.config.limits.max_schema_bytes,
                )
                .map_err(|e| match e {
                    crate::schema::SchemaError::TooLarge { limit, actual } => Error::TooLarge {
                        field: "record.schema".into(),
                        limit,
                        actual,
                    },
                    other => Error::invalid("record.schema", other.to_string()),
                })?;
                self.schemas.register(&record, effects).await?;
                Ok((record, self.schemas.owns_effects()))
            },
        )
        .await
    }

    /// Fetches a data shape.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub async fn get_schema(
        &self,
        ctx: &RequestContext,
        schema_id: &SchemaId,
        version: &SchemaVersion,
    ) -> Result<DataShapeRecord, Error> {
        let id = format!("{schema_id}@{version}");
        self.call(
            ctx,
            Action::SchemasGet,
            ("schema", id.clone()),
            None,
            Vec::new(),
            async move |_| {
                let record = self
                    .schemas
                    .get(ctx.tenant_id, ctx.namespace_id, schema_id, version)
                    .await?;
                Ok((record.ok_or(Error::NotFound { what: "schema", id })?, false))
            },
        )
        .await
    }

    /// Lists data shapes.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad cursor or limit.
    pub async fn list_schemas(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<DataShapeRecord>, Error> {
        let request_hash = self.hash_request(&page);
        self.call(
            ctx,
            Action::SchemasList,
            ("namespace", ctx.namespace_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                self.schemas
                    .list(ctx.tenant_id, ctx.namespace_id, &page)
                    .await
                    .map(|p| (p, false))
                    .map_err(Error::from)
            },
        )
        .await
    }
}

/// The recorded answer to a trigger: its entry's decision and packets, with the current status.
fn trigger_result(
    key: &RunKey,
    trigger_id: &TriggerId,
    entry: Option<JournalEntry>,
    status: RunStatus,
) -> Result<TriggerResult, Error> {
    match entry.map(|e| e.body) {
        Some(EntryBody::Trigger(t)) => Ok(TriggerResult {
            decision: t.decision,
            packets: t.packets,
            status,
        }),
        _ => Err(Error::Corrupt(format!(
            "run {}: no entry for trigger {trigger_id}",
            key.run_id
        ))),
    }
}

fn decision_id(seq: u64) -> Result<DecisionId, Error> {
    DecisionId::new(format!("decision-{seq}")).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Refuses an inline payload over the limit.
fn check_payload(payload: &PacketPayload, field: &str, limit: usize) -> Result<(), Error> {
    let actual = payload
        .inline_size()
        .map_err(|e| Error::invalid(field, e.to_string()))?;
    if actual > limit {
        return Err(Error::TooLarge {
            field: field.to_owned(),
            limit,
            actual,
        });
    }
    Ok(())
}
