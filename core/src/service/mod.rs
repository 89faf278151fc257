//! The service layer: the one place that fixes the order of every call.
//!
//! authorize → rate limit → quota check → engine step → persist (one atomic append) → usage → audit.
//!
//! Transports (MCP, gRPC) authenticate, build a [`RequestContext`] and call exactly one method
//! here. Enterprise deployments swap the seams; they never branch this logic.

use std::collections::BTreeMap;
use std::hash::Hasher as _;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::access::{
    Action, AuditEvent, AuditOutcome, AuditSink, Authorizer, AuthzError, CallerCredential,
    InMemoryAuditSink, InMemoryUsageMeter, RateLimit, RequestContext, Resource, ScopeAuthorizer,
    UsageEvent, UsageMeter, UsageMetric,
};
use crate::disclosure::{
    DispatchTarget, Dispatcher, PacketRecord, PolicyDecider, RecordingDispatcher, StaticPolicy,
};
use crate::engine::transition::{self, Begun, TransitionError};
use crate::engine::{self, DisclosureContext, EngineConfig, Limits, Plan};
use crate::error::Error;
use crate::evidence::{EvidenceContext, EvidenceError, EvidenceResult, TrustLane};
use crate::hashing::HashDigest;
use crate::ids::{
    ConditionId, NamespaceId, RunId, ScenarioId, SchemaId, SchemaVersion, StageId, SubmissionId,
    TenantId, TriggerId,
};
use crate::provider::{EvidenceProvider, ProviderRegistry, RegistryError};
use crate::run::{
    DecisionOutcome, DecisionRecord, EntryBody, GateEvalRecord, GateEvaluation, JournalEntry,
    RunHead, RunKey, RunStatus, SafeSummary, SubmissionEntry, SubmissionRecord, ToolCallRecord,
    TriggerEvent, TriggerKind, TriggerResult,
};
use crate::runpack::{self, MemoryRunpackStore, RunpackManifest, VerifyOptions, VerifyReport};
use crate::spec::{PacketPayload, ScenarioSpec};
use crate::store::{
    DataShapeRecord, Effects, Page, PageRequest, PutOutcome, RunStore, RunpackKey, RunpackStore,
    ScenarioRecord, ScenarioStore, ScenarioSummary, SchemaRegistry, StoreError,
};
use crate::time::Timestamp;

mod precheck;
mod providers;
mod runpacks;
mod runs;
mod scenarios;
mod schemas;
mod watch;

pub use precheck::{DataShapeId, PrecheckRequest, PrecheckResult};
pub use providers::{CheckSchemaView, EvidenceQueryRequest, ProviderContractView, ProviderSummary};
pub use runpacks::ExportResult;
pub use runs::{
    DecidedTrigger, NextRequest, RunStatusView, StartRequest, StartResult, SubmitRequest,
};
pub use scenarios::DefineResult;
pub use watch::RunWatch;

/// Evaluations of more work than this, in items ([`Plan::work`]), run on the blocking pool.
const INLINE_WORK: usize = 8192;

/// How often a trigger or submission is recomputed when a concurrent call appended first.
const MAX_APPEND_ATTEMPTS: usize = 8;
/// Compiled plans kept in memory.
const PLAN_CACHE_SIZE: usize = 512;

/// Builds a [`DecisionGate`]; every seam not set gets its open-source in-memory default.
#[derive(Default)]
pub struct DecisionGateBuilder {
    config: EngineConfig,
    providers: ProviderRegistry,
    tenant_providers: Option<BTreeMap<TenantId, ProviderRegistry>>,
    scenarios: Option<Arc<dyn ScenarioStore>>,
    runs: Option<Arc<dyn RunStore>>,
    schemas: Option<Arc<dyn SchemaRegistry>>,
    authorizer: Option<Arc<dyn Authorizer>>,
    usage: Option<Arc<dyn UsageMeter>>,
    rate_limit: Option<Arc<dyn RateLimit>>,
    audit: Option<Arc<dyn AuditSink>>,
    dispatcher: Option<Arc<dyn Dispatcher>>,
    policy: Option<Arc<dyn PolicyDecider>>,
    runpacks: Option<Arc<dyn RunpackStore>>,
    signer: Option<SigningKey>,
    disclose_raw_evidence: bool,
}

impl DecisionGateBuilder {
    /// Whether direct evidence queries return raw values (off by default: callers see the
    /// digest, never the value).
    #[must_use]
    pub fn disclose_raw_evidence(mut self, disclose: bool) -> Self {
        self.disclose_raw_evidence = disclose;
        self
    }

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

    /// Uses these providers (replacing any registered before).
    #[must_use]
    pub fn providers(mut self, providers: ProviderRegistry) -> Self {
        self.providers = providers;
        self
    }

    /// Gives each tenant its own providers: a tenant reaches only its registry here, and a
    /// tenant without one reaches only the registry of [`Self::providers`] (on a shared server,
    /// the `time` provider alone). Without this, every tenant reaches that one registry.
    #[must_use]
    pub fn tenant_providers(mut self, registries: BTreeMap<TenantId, ProviderRegistry>) -> Self {
        self.tenant_providers = Some(registries);
        self
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

    /// Rate limits per credential and per tenant, applied after authorization (none by
    /// default: the open-source server limits each principal at admission).
    #[must_use]
    pub fn rate_limit(mut self, rate_limit: Arc<dyn RateLimit>) -> Self {
        self.rate_limit = Some(rate_limit);
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
            tenant_providers: self.tenant_providers,
            scenarios: self.scenarios.unwrap_or_else(|| memory.clone()),
            runs: self.runs.unwrap_or_else(|| memory.clone()),
            schemas: self.schemas.unwrap_or(memory),
            authorizer: self.authorizer.unwrap_or_else(|| Arc::new(ScopeAuthorizer)),
            usage: self
                .usage
                .unwrap_or_else(|| Arc::new(InMemoryUsageMeter::default())),
            rate_limit: self.rate_limit,
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
            disclose_raw_evidence: self.disclose_raw_evidence,
            plans: Mutex::new(LruCache::new(
                NonZeroUsize::new(PLAN_CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
            call_seq: AtomicU64::new(0),
            appended: tokio::sync::watch::Sender::new(0),
            heavy: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            )),
            // A random instance id without a dependency: std seeds RandomState randomly.
            instance: std::hash::BuildHasher::build_hasher(
                &std::collections::hash_map::RandomState::new(),
            )
            .finish(),
        }
    }
}

/// The Decision Gate service.
pub struct DecisionGate {
    config: EngineConfig,
    /// Every tenant's providers, or those of a tenant without its own.
    providers: ProviderRegistry,
    /// Each tenant's own providers, when providers are per tenant.
    tenant_providers: Option<BTreeMap<TenantId, ProviderRegistry>>,
    scenarios: Arc<dyn ScenarioStore>,
    runs: Arc<dyn RunStore>,
    schemas: Arc<dyn SchemaRegistry>,
    authorizer: Arc<dyn Authorizer>,
    usage: Arc<dyn UsageMeter>,
    rate_limit: Option<Arc<dyn RateLimit>>,
    audit: Arc<dyn AuditSink>,
    dispatcher: Arc<dyn Dispatcher>,
    policy: Arc<dyn PolicyDecider>,
    runpacks: Arc<dyn RunpackStore>,
    signer: Option<SigningKey>,
    disclose_raw_evidence: bool,
    plans: Mutex<LruCache<(TenantId, NamespaceId, ScenarioId), Arc<Plan>>>,
    call_seq: AtomicU64,
    instance: u64,
    /// Bumped after every journal append of this instance, so watchers wake without polling.
    appended: tokio::sync::watch::Sender<u64>,
    /// Large evaluations running at once on the blocking pool: one per core.
    heavy: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for DecisionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionGate")
            .field("config", &self.config)
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

/// Sets its flag when dropped: a job on the blocking pool stops when its caller goes away.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// An authorized call in progress: what to audit and meter when it ends.
struct Call {
    action: Action,
    resource: Resource,
    request_hash: Option<HashDigest>,
    effects: Effects,
}

/// What of a call's effects the store committed together with its write; the service meters
/// and audits the rest.
#[derive(Clone, Copy, Debug)]
pub(super) struct Committed {
    usage: bool,
    audit: bool,
    /// Whether the call changed anything; a call that did cannot answer an error any more.
    wrote: bool,
}

impl Committed {
    /// Nothing: a read, or a write whose store keeps no trail of its own.
    pub(super) const NOTHING: Self = Self {
        usage: false,
        audit: false,
        wrote: false,
    };

    /// A write outside the stores whose usage the call recorded before writing (a runpack
    /// export): the service audits it.
    pub(super) const USAGE_RECORDED: Self = Self {
        usage: true,
        audit: false,
        wrote: true,
    };

    /// All of them when `owned`, else nothing (scenarios and data shapes).
    pub(super) fn all_if(owned: bool) -> Self {
        Self {
            usage: owned,
            audit: owned,
            wrote: true,
        }
    }

    /// What a run store's write committed.
    pub(super) fn by_runs(runs: &dyn crate::store::RunStore) -> Self {
        Self {
            usage: runs.owns_effects(),
            audit: runs.owns_audit(),
            wrote: true,
        }
    }
}

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

    /// Whether the service can serve requests: its run store answers.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when it does not.
    pub async fn ready(&self) -> Result<(), Error> {
        self.runs.ready().await.map_err(Error::from)
    }

    /// The providers `tenant` reaches: its own when providers are per tenant (else the shared
    /// registry, which then holds only what every tenant may reach).
    #[must_use]
    pub fn providers(&self, tenant: TenantId) -> &ProviderRegistry {
        self.tenant_providers
            .as_ref()
            .and_then(|registries| registries.get(&tenant))
            .unwrap_or(&self.providers)
    }

    // ---- call bracket ---------------------------------------------------------------------------

    /// Runs one service call inside the bracket: authorize and quota-check, run `op` with the
    /// call's effects, then meter and audit (or audit the failure). Every public method runs
    /// exactly one bracket: what a call reads on its own behalf (the gate evaluations of its
    /// feedback, the verification of its export) happens inside `op`, under the same action.
    pub(super) async fn call<T>(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: Resource,
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

    /// Runs `job`, a large evaluation, off the async workers: on the blocking pool, at most one
    /// per core at once, so a large gate never holds a worker other calls need. Dropping the
    /// returned future (the request timeout, a caller gone) stops the job before its next
    /// condition or gate; nothing was decided, so nothing is written.
    pub(super) async fn off_thread<T: Send + 'static>(
        &self,
        job: impl FnOnce(&AtomicBool) -> Option<T> + Send + 'static,
    ) -> Result<T, Error> {
        let _permit = self
            .heavy
            .acquire()
            .await
            .map_err(|_| Error::Unavailable("the evaluation pool is closed".into()))?;
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let flag = stop.0.clone();
        match tokio::task::spawn_blocking(move || job(&flag)).await {
            Ok(Some(done)) => Ok(done),
            Ok(None) => Err(Error::Unavailable("the evaluation was stopped".into())),
            Err(e) => Err(Error::Unavailable(format!("the evaluation failed: {e}"))),
        }
    }

    /// Refuses a page size outside `1..=max_page_size` (before the store, whose own bound is
    /// the ceiling).
    pub(super) fn check_page(&self, limit: u32) -> Result<(), Error> {
        let max = self.config.limits.max_page_size;
        if limit == 0 || usize::try_from(limit).map_or(true, |l| l > max) {
            return Err(Error::invalid(
                "limit",
                format!("must be between 1 and {max}, got {limit}"),
            ));
        }
        Ok(())
    }

    /// The digest of a request, for the audit trail.
    pub(super) fn hash_request(&self, request: &impl Serialize) -> Option<HashDigest> {
        self.digest_request(request).ok()
    }

    /// The digest of a request the run's journal records as a tool call: computed once for
    /// both the journal and the audit trail, which therefore carry the same `request_hash`.
    pub(super) fn digest_request(&self, request: &impl Serialize) -> Result<HashDigest, Error> {
        self.config
            .hash_algorithm
            .digest_json(request)
            .map_err(|e| Error::invalid("request", e.to_string()))
    }

    /// Authorizes and quota-checks a call. Refusals are audited here.
    async fn begin(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: Resource,
        request_hash: Option<HashDigest>,
        mut usage: Vec<(UsageMetric, u64)>,
    ) -> Result<Call, Error> {
        usage.insert(0, (UsageMetric::ToolCalls, 1));
        let call_key = self.call_key(ctx, action);
        let usage = usage
            .into_iter()
            .map(|(metric, quantity)| UsageEvent {
                tenant_id: ctx.tenant_id,
                namespace_id: ctx.namespace_id,
                metric,
                quantity,
                idempotency_key: format!("{call_key}/{metric:?}"),
            })
            .collect::<Vec<_>>();
        let mut call = Call {
            action,
            resource,
            request_hash,
            effects: Effects {
                usage,
                audit: Vec::new(),
            },
        };
        let refused = match self.authorizer.authorize(ctx, action, &call.resource).await {
            Err(AuthzError::OutOfScope) => Some(Error::NotFound {
                what: call.resource.kind,
                id: call.resource.id.clone(),
            }),
            Err(e) => Some(Error::from(e)),
            Ok(()) => match &self.rate_limit {
                Some(limit) => limit.admit(ctx).await.err().map(Error::from),
                None => None,
            },
        };
        let refused = match refused {
            None => self
                .usage
                .check(&call.effects.usage)
                .await
                .err()
                .map(Error::from),
            refused => refused,
        };
        if let Some(error) = refused {
            self.audit
                .append(&[self.event(
                    ctx,
                    &call,
                    AuditOutcome::Failure {
                        kind: error.kind().as_str().to_owned(),
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
        let result = match result {
            // A call that changed nothing (a read) is metered before it answers: a meter that
            // refuses (a quota reached by concurrent calls, a ledger down) refuses the call,
            // which then has changed nothing and is never answered uncounted.
            Ok((_, committed)) if !committed.usage && !committed.wrote => self
                .usage
                .record(&call.effects.usage)
                .await
                .map_err(Error::from)
                .and(result),
            other => other,
        };
        match result {
            Ok((value, committed)) => {
                // The operation happened; an error now would make the caller retry something done.
                // A sink that cannot share the store's transaction can miss it (ADR 0003): say so.
                if !committed.usage
                    && committed.wrote
                    && let Err(e) = self.usage.record(&call.effects.usage).await
                {
                    tracing::error!(action = call.action.name(), resource = %call.resource, "usage not recorded: {e}");
                }
                if !committed.audit
                    && let Err(e) = self.audit.append(&call.effects.audit).await
                {
                    tracing::error!(action = call.action.name(), resource = %call.resource, "audit event not recorded: {e}");
                }
                Ok(value)
            }
            Err(error) => {
                self.audit
                    .append(&[self.event(
                        ctx,
                        &call,
                        AuditOutcome::Failure {
                            kind: error.kind().as_str().to_owned(),
                        },
                    )])
                    .await?;
                Err(error)
            }
        }
    }

    /// The key that makes a call's usage count once: the client's idempotency key when it sent
    /// one (a retry of the same call is then metered once), else one unique per call across
    /// tenants and restarts (this service instance's random id and its call counter).
    fn call_key(&self, ctx: &RequestContext, action: Action) -> String {
        match &ctx.idempotency_key {
            Some(key) => format!(
                "{}/{}/client/{}/{key}",
                ctx.tenant_id,
                ctx.namespace_id,
                action.name()
            ),
            None => {
                let seq = self.call_seq.fetch_add(1, Ordering::Relaxed);
                format!(
                    "{}/{}/{:016x}-{seq}/{}",
                    ctx.tenant_id,
                    ctx.namespace_id,
                    self.instance,
                    action.name()
                )
            }
        }
    }

    fn event(&self, ctx: &RequestContext, call: &Call, outcome: AuditOutcome) -> AuditEvent {
        AuditEvent {
            principal: ctx.principal.subject.clone(),
            action: call.action,
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            resource: call.resource.to_string(),
            outcome,
            request_id: ctx.request_id.clone(),
            correlation_id: ctx.correlation_id.clone(),
            request_hash: call.request_hash.clone(),
            credential: Some(CallerCredential::of(&ctx.principal)),
        }
    }

    pub(super) fn run_key(ctx: &RequestContext, run_id: &RunId) -> RunKey {
        RunKey {
            tenant_id: ctx.tenant_id,
            namespace_id: ctx.namespace_id,
            run_id: run_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    /// The request timeout really ends the work: a job on the blocking pool sees its stop flag
    /// once the caller's future is dropped.
    #[tokio::test]
    async fn dropping_an_off_thread_call_stops_its_job() {
        let gate = DecisionGate::builder().build();
        let observed = Arc::new(AtomicBool::new(false));
        let seen = observed.clone();
        let call = gate.off_thread(move |stop| {
            let started = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(10) {
                if stop.load(Ordering::Relaxed) {
                    seen.store(true, Ordering::Relaxed);
                    return None::<()>;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Some(())
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(50), call)
                .await
                .is_err(),
            "the caller gave up first"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !observed.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(observed.load(Ordering::Relaxed), "the job saw the stop");
        // The permit came back: another job runs.
        assert_eq!(gate.off_thread(|_| Some(7)).await.unwrap(), 7);
    }
}
