//! Who may do what, how much of it, and the record of what happened: the `Authorizer`,
//! `UsageMeter` and `AuditSink` seams, with their open-source defaults.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::ErrorKind;
use crate::hashing::HashDigest;
pub use crate::identity::Principal;
use crate::ids::{CorrelationId, NamespaceId, TenantId};

/// Every operation the service performs; the names are the MCP tool names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Define a scenario.
    ScenarioDefine,
    /// Start a run.
    ScenarioStart,
    /// Read a run's status.
    ScenarioStatus,
    /// Ask for the next decision.
    ScenarioNext,
    /// Attach a submission.
    ScenarioSubmit,
    /// Send a trigger.
    ScenarioTrigger,
    /// Query a provider directly.
    EvidenceQuery,
    /// Export a runpack.
    RunpackExport,
    /// Verify a runpack.
    RunpackVerify,
    /// List providers.
    ProvidersList,
    /// Read a provider contract.
    ProviderContractGet,
    /// Read a check schema.
    ProviderCheckSchemaGet,
    /// Register a data shape.
    SchemasRegister,
    /// List data shapes.
    SchemasList,
    /// Read a data shape.
    SchemasGet,
    /// List scenarios.
    ScenariosList,
    /// Simulate a stage.
    Precheck,
}

impl Action {
    /// Every action, in the order tools are listed.
    pub const ALL: [Self; 17] = [
        Self::ScenarioDefine,
        Self::ScenarioStart,
        Self::ScenarioStatus,
        Self::ScenarioNext,
        Self::ScenarioSubmit,
        Self::ScenarioTrigger,
        Self::EvidenceQuery,
        Self::RunpackExport,
        Self::RunpackVerify,
        Self::ProvidersList,
        Self::ProviderContractGet,
        Self::ProviderCheckSchemaGet,
        Self::SchemasRegister,
        Self::SchemasList,
        Self::SchemasGet,
        Self::ScenariosList,
        Self::Precheck,
    ];

    /// The action with this snake_case name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The snake_case name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ScenarioDefine => "scenario_define",
            Self::ScenarioStart => "scenario_start",
            Self::ScenarioStatus => "scenario_status",
            Self::ScenarioNext => "scenario_next",
            Self::ScenarioSubmit => "scenario_submit",
            Self::ScenarioTrigger => "scenario_trigger",
            Self::EvidenceQuery => "evidence_query",
            Self::RunpackExport => "runpack_export",
            Self::RunpackVerify => "runpack_verify",
            Self::ProvidersList => "providers_list",
            Self::ProviderContractGet => "provider_contract_get",
            Self::ProviderCheckSchemaGet => "provider_check_schema_get",
            Self::SchemasRegister => "schemas_register",
            Self::SchemasList => "schemas_list",
            Self::SchemasGet => "schemas_get",
            Self::ScenariosList => "scenarios_list",
            Self::Precheck => "precheck",
        }
    }
}

/// What a call acts on: a kind (`scenario`, `run`, `schema`, `provider`, `namespace`) and an
/// id within the call's tenant and namespace.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resource {
    /// The kind of resource.
    pub kind: &'static str,
    /// Its id (empty for a whole namespace).
    pub id: String,
}

impl Resource {
    /// A resource of `kind` with `id`.
    #[must_use]
    pub fn new(kind: &'static str, id: impl Into<String>) -> Self {
        Self {
            kind,
            id: id.into(),
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.id)
    }
}

/// The context of one call: who, in which tenant and namespace, and the ids that tie its records
/// together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestContext {
    /// The caller.
    pub principal: Principal,
    /// The tenant the call acts in.
    pub tenant_id: TenantId,
    /// The namespace the call acts in.
    pub namespace_id: NamespaceId,
    /// The transport's request id.
    pub request_id: Option<String>,
    /// The caller's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// The client's idempotency key (HTTP `Idempotency-Key`, gRPC `idempotency-key` metadata,
    /// MCP `_meta.idempotency_key`): a retried call with the same key is metered once.
    pub idempotency_key: Option<String>,
    /// The transport the call arrived on (`stdio`, `http`, `grpc`; `local` for a caller in
    /// the same process), for authorizers that switch transports per tenant.
    pub transport: &'static str,
}

impl RequestContext {
    /// A local caller acting in `tenant_id` / `namespace_id`.
    #[must_use]
    pub fn local(tenant_id: TenantId, namespace_id: NamespaceId) -> Self {
        Self {
            principal: Principal::local(),
            tenant_id,
            namespace_id,
            request_id: None,
            correlation_id: None,
            idempotency_key: None,
            transport: "local",
        }
    }
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// The caller may see the resource but not do this; reported as permission denied.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The resource is outside the caller's scope; reported exactly like a missing resource.
    #[error("not found")]
    OutOfScope,
    /// The decision could not be made (a policy store is down); refuse.
    #[error("authorization unavailable: {0}")]
    Unavailable(String),
}

/// Decides whether a principal may perform an action on a resource in a tenant and namespace.
///
/// # Contract
/// 1. A resource outside the principal's tenant or namespace scope is `OutOfScope`, whatever the
///    action, so the caller cannot tell it from a missing one.
/// 2. A missing permission inside the scope is `Denied`.
/// 3. When the decision cannot be made, the answer is `Unavailable`: never an allow, nor a
///    `Denied` or `OutOfScope` the caller would take for a final answer.
/// 4. The decision depends only on the context, the action and the resource: asking twice
///    gives the same answer while the policy is unchanged.
///
/// `crate::conformance::authorizer` (feature `conformance`) checks each clause on requests the
/// implementation's policy answers.
///
/// # Errors
/// [`AuthzError`] as above.
///
/// # Cancellation
/// Dropping the future has no effect.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Allows or refuses `action` on `resource` for `ctx`.
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: &Resource,
    ) -> Result<(), AuthzError>;
}

/// The open-source authorizer: a principal may do its allowed actions inside its scope.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopeAuthorizer;

#[async_trait]
impl Authorizer for ScopeAuthorizer {
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        _resource: &Resource,
    ) -> Result<(), AuthzError> {
        let p = &ctx.principal;
        if p.tenant_id.is_some_and(|t| t != ctx.tenant_id)
            || p.namespace_id.is_some_and(|n| n != ctx.namespace_id)
        {
            return Err(AuthzError::OutOfScope);
        }
        if p.actions
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&action))
        {
            return Err(AuthzError::Denied(format!(
                "{} may not call {}",
                p.subject,
                action.name()
            )));
        }
        Ok(())
    }
}

/// A metered quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageMetric {
    /// Every accepted call.
    ToolCalls,
    /// Runs started.
    RunsStarted,
    /// Provider queries.
    EvidenceQueries,
    /// Runpacks exported.
    RunpackExports,
    /// Data shapes and scenarios written.
    SchemasWritten,
    /// Bytes stored.
    StorageBytes,
    /// Registry entries held.
    RegistryEntries,
}

/// One usage increment, deduplicated by its idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEvent {
    /// The tenant billed.
    pub tenant_id: TenantId,
    /// The namespace.
    pub namespace_id: NamespaceId,
    /// What is counted.
    pub metric: UsageMetric,
    /// How much.
    pub quantity: u64,
    /// Deduplication key: the same key is counted once.
    pub idempotency_key: String,
}

/// The period a quota counts over. Periods are calendar periods in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    /// A UTC day, from midnight.
    Day,
    /// A UTC calendar month, from the first at midnight.
    Month,
    /// Forever: the total never resets.
    Total,
}

impl QuotaPeriod {
    /// Every period, in order.
    pub const ALL: [Self; 3] = [Self::Day, Self::Month, Self::Total];

    /// The period's name on the wire and in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
            Self::Total => "total",
        }
    }
}

impl UsageMetric {
    /// Every metric, in order.
    pub const ALL: [Self; 7] = [
        Self::ToolCalls,
        Self::RunsStarted,
        Self::EvidenceQueries,
        Self::RunpackExports,
        Self::SchemasWritten,
        Self::StorageBytes,
        Self::RegistryEntries,
    ];

    /// The metric's name on the wire and in the database.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolCalls => "tool_calls",
            Self::RunsStarted => "runs_started",
            Self::EvidenceQueries => "evidence_queries",
            Self::RunpackExports => "runpack_exports",
            Self::SchemasWritten => "schemas_written",
            Self::StorageBytes => "storage_bytes",
            Self::RegistryEntries => "registry_entries",
        }
    }

    /// The metric named `name`, if any.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

/// A refusal by a quota: which counter, over which period, its limit, what is used, and when
/// it resets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaRefusal {
    /// The counter.
    pub metric: UsageMetric,
    /// The period it counts over.
    pub period: QuotaPeriod,
    /// The largest total the period accepts.
    pub limit: u64,
    /// What the period has used.
    pub used: u64,
    /// When the period ends (unix milliseconds); `None` for a total, which never resets.
    pub reset_at_ms: Option<u64>,
    /// How long until the reset, in milliseconds, when there is one.
    pub retry_after_ms: Option<u64>,
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quota exceeded: {} per {} is limited to {}, {} used",
            self.metric.as_str(),
            self.period.as_str(),
            self.limit,
            self.used
        )?;
        if let Some(at) = self.reset_at_ms {
            write!(f, ", resets at {at} (unix ms)")?;
        }
        Ok(())
    }
}

/// Why usage was refused or could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A quota would be exceeded; wait for its reset or raise it.
    #[error("{0}")]
    QuotaExceeded(QuotaRefusal),
    /// The meter cannot be reached; refuse.
    #[error("usage meter unavailable: {0}")]
    Unavailable(String),
}

/// Whose rate a rate limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    /// One credential (an API key, a token's subject at its issuer).
    Credential,
    /// Every caller of one tenant together.
    Tenant,
}

impl RateScope {
    /// The scope's name on the wire.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Credential => "credential",
            Self::Tenant => "tenant",
        }
    }
}

/// Why a rate limit refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Over the rate; wait `retry_after_ms`.
    #[error("rate limit exceeded for the {}; retry in {retry_after_ms} ms", scope.as_str())]
    Limited {
        /// Whose rate.
        scope: RateScope,
        /// How long until a call would be admitted (at least 1).
        retry_after_ms: u64,
    },
    /// The limiter cannot decide; refuse.
    #[error("rate limiting unavailable: {0}")]
    Unavailable(String),
}

/// Rate limits of calls per credential and per tenant, applied after authorization and before
/// the quota check. Rate limits protect availability; quotas ([`UsageMeter`]) enforce plans;
/// both apply.
///
/// # Contract
/// 1. A key (a credential, a tenant) within its rate is admitted: a burst, then the sustained
///    rate.
/// 2. Past it, `admit` refuses with `Limited` and a `retry_after_ms` of at least 1; after
///    waiting that long, the key is admitted again.
/// 3. Keys are independent: one credential's calls never use another's rate, nor one
///    tenant's another tenant's.
/// 4. When the limiter cannot decide, it refuses with `Unavailable` or decides by a stricter
///    or equal local rate: never without a limit.
///
/// `crate::conformance::rate_limit` (feature `conformance`) checks each clause.
#[async_trait]
pub trait RateLimit: Send + Sync {
    /// Whether the call may proceed now; admitting it uses one unit of its rates.
    async fn admit(&self, ctx: &RequestContext) -> Result<(), RateError>;
}

/// Checks quotas before an operation and records usage after it.
///
/// # Contract
/// 1. `check` has no effect, whether it refuses or not: no total moves, and a key it was shown
///    still counts when recorded. It refuses with `QuotaExceeded` when recording the events
///    would exceed a quota, as far as the totals it reads say: concurrent calls may pass it
///    together, which clause 3 settles.
/// 2. `record` counts each idempotency key once, however often it is recorded (in one call,
///    in later calls, in concurrent calls).
/// 3. A meter with quotas enforces them in `record`, atomically: when the events not counted
///    before would take a total past its limit, `record` refuses with `QuotaExceeded` and
///    records none of the call's events; concurrent records never take a total past a limit.
///    Keys counted before consume nothing again.
/// 4. When the meter cannot decide, `check` and `record` refuse with `Unavailable` (fail
///    closed).
///
/// `crate::conformance::usage_meter` (feature `conformance`) checks each clause.
///
/// # Errors
/// [`UsageError`] as above.
///
/// # Cancellation
/// Dropping a `record` future may leave the usage unrecorded; the idempotency key makes a retry
/// safe.
#[async_trait]
pub trait UsageMeter: Send + Sync {
    /// Whether the events fit the quotas.
    async fn check(&self, events: &[UsageEvent]) -> Result<(), UsageError>;
    /// Records the events.
    async fn record(&self, events: &[UsageEvent]) -> Result<(), UsageError>;
}

/// Idempotency keys the in-memory meter remembers. Keys are unique per call, so a repeat comes
/// soon after the original; remembering every key would grow without bound in a server.
const REMEMBERED_KEYS: usize = 65_536;

#[derive(Debug)]
struct UsageTotals {
    /// Keyed digests of the keys seen, not the keys: no copy of each key is kept, and a lookup
    /// never follows a pointer to compare strings. Two keys among the remembered ones share a
    /// 64-bit digest with odds of about 2^-48, and the digest's key is random per meter, so
    /// no caller can choose keys that collide.
    seen: lru::LruCache<u64, ()>,
    keys: std::collections::hash_map::RandomState,
    totals: BTreeMap<(TenantId, UsageMetric), u64>,
}

impl Default for UsageTotals {
    fn default() -> Self {
        Self {
            seen: lru::LruCache::new(
                std::num::NonZeroUsize::new(REMEMBERED_KEYS).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
            keys: std::collections::hash_map::RandomState::new(),
            totals: BTreeMap::new(),
        }
    }
}

/// The open-source meter: counts in memory, never refuses, and ignores a repeated idempotency
/// key among the most recent 65,536.
#[derive(Debug, Default)]
pub struct InMemoryUsageMeter {
    state: Mutex<UsageTotals>,
}

impl InMemoryUsageMeter {
    /// The total recorded for `tenant_id` and `metric`.
    #[must_use]
    pub fn total(&self, tenant_id: TenantId, metric: UsageMetric) -> u64 {
        self.state
            .lock()
            .map(|s| s.totals.get(&(tenant_id, metric)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

#[async_trait]
impl UsageMeter for InMemoryUsageMeter {
    async fn check(&self, _events: &[UsageEvent]) -> Result<(), UsageError> {
        Ok(())
    }

    async fn record(&self, events: &[UsageEvent]) -> Result<(), UsageError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| UsageError::Unavailable("meter lock poisoned".to_owned()))?;
        for e in events {
            let key = std::hash::BuildHasher::hash_one(&state.keys, &e.idempotency_key);
            if state.seen.put(key, ()).is_none() {
                *state.totals.entry((e.tenant_id, e.metric)).or_default() += e.quantity;
            }
        }
        Ok(())
    }
}

/// How a call ended, for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditOutcome {
    /// The call succeeded.
    Success,
    /// The call was refused or failed; `kind` is the stable error kind.
    Failure {
        /// The error kind (`not_found`, `permission_denied`, `invalid_input`, ...).
        kind: String,
    },
}

/// One audit event: who did what, where, with which outcome. Hashes, never payloads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    /// The caller's subject.
    pub principal: String,
    /// The operation.
    pub action: Action,
    /// The tenant acted in.
    pub tenant_id: TenantId,
    /// The namespace acted in.
    pub namespace_id: NamespaceId,
    /// The resource (`scenario/<id>`, `run/<id>`, `schema/<id>@<version>`).
    pub resource: String,
    /// How it ended.
    pub outcome: AuditOutcome,
    /// The transport's request id.
    pub request_id: Option<String>,
    /// The caller's correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// Digest of the canonical request, when there is one.
    pub request_hash: Option<HashDigest>,
    /// How the caller authenticated: every call's event is also the record of the successful
    /// authentication it rests on (refused ones are [`AccessEvent`]s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CallerCredential>,
}

/// How the caller of an audited call proved who it is: never a secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerCredential {
    /// The authentication method.
    pub method: crate::identity::AuthMethod,
    /// Who vouched for the subject (an OIDC issuer), if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The credential presented (an API key id, a token's id), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
}

impl CallerCredential {
    /// The credential `principal` authenticated with.
    #[must_use]
    pub fn of(principal: &Principal) -> Self {
        Self {
            method: principal.auth_method,
            issuer: principal.issuer.clone(),
            credential_id: principal.credential_id.clone(),
        }
    }
}

/// Why a request was refused before it reached the service (a transport-level security event).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessRefusal {
    /// No or wrong credentials (token, certificate, non-loopback peer in local-only mode).
    Unauthenticated,
    /// The principal exceeded its request rate.
    RateLimited,
    /// Too many requests were in flight.
    Overloaded,
    /// The request body exceeded the size limit.
    TooLarge,
    /// The client's correlation id was malformed.
    InvalidCorrelationId,
    /// The request named an unknown tool or its arguments did not match the tool's schema.
    InvalidRequest,
    /// Authentication could not be decided (an identity provider is unreachable).
    Unavailable,
    /// The authenticated request's body did not arrive within the body timeout.
    BodyTimeout,
}

impl AccessRefusal {
    /// The stable error kind reported to the caller.
    #[must_use]
    pub fn kind(self) -> ErrorKind {
        match self {
            Self::Unauthenticated => ErrorKind::Unauthenticated,
            Self::RateLimited => ErrorKind::RateLimited,
            Self::Overloaded => ErrorKind::Overloaded,
            Self::TooLarge => ErrorKind::TooLarge,
            Self::InvalidCorrelationId => ErrorKind::InvalidCorrelationId,
            Self::InvalidRequest => ErrorKind::InvalidInput,
            Self::Unavailable => ErrorKind::Unavailable,
            Self::BodyTimeout => ErrorKind::InvalidInput,
        }
    }
}

/// A request refused before it reached the service: who tried, over what, and why. Secrets and
/// payloads appear only as digests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessEvent {
    /// Why it was refused.
    pub refusal: AccessRefusal,
    /// `stdio` or `http`.
    pub transport: String,
    /// The caller's subject, when it was established.
    pub principal: Option<String>,
    /// The peer address, for network transports.
    pub peer: Option<String>,
    /// The tool named, when known.
    pub tool: Option<String>,
    /// The transport's request id.
    pub request_id: Option<String>,
    /// The caller's correlation id, when it was valid.
    pub correlation_id: Option<CorrelationId>,
    /// Keyed digest of the presented credential or rejected value, never the value itself.
    pub presented_hash: Option<KeyedDigest>,
    /// What was wrong, in words (never the rejected value).
    pub detail: String,
}

/// A keyed digest of a presented credential or rejected value: comparable with other digests
/// under the same server key (to correlate attempts), useless for testing guesses without it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyedDigest {
    /// How `value` was computed.
    pub algorithm: KeyedAlgorithm,
    /// Lowercase hex of the MAC.
    pub value: String,
}

/// The algorithms of a [`KeyedDigest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyedAlgorithm {
    /// HMAC-SHA-256 (RFC 2104) under the server's digest key.
    HmacSha256,
}

/// One line of an audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditRecord {
    /// A service call and its outcome.
    Call(AuditEvent),
    /// A request refused before it reached the service.
    Access(AccessEvent),
}

/// Why an audit event could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit sink failed: {0}")]
pub struct AuditError(pub String);

/// Appends security and state-change events.
///
/// # Contract
/// 1. `append` and `append_access` record every event, as given and in order (the order of
///    the calls, and of the events within a call), or return an error. A sink may keep separate
///    trails (each tenant's call events, the refused requests), each in that order.
/// 2. Recorded events are never changed or removed through this seam.
///
/// `crate::conformance::audit_sink` (feature `conformance`) checks each clause.
///
/// # Errors
/// [`AuditError`] when the events could not be recorded durably.
///
/// # Cancellation
/// Dropping the future may leave a prefix of the events recorded.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Records the events.
    async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError>;

    /// Records a refused request.
    async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError>;
}

/// Appends one JSON object per line to a file. A call returns once its lines are written and
/// synced to disk. Calls that arrive while a sync is in progress queue their lines and are
/// written and synced together by the next one (group commit), so durability costs one sync per
/// batch rather than per call. The sync runs on the calling task (the batch's leader), not on a
/// thread of its own: handing every call to a writer thread and back cost more CPU than the
/// write and the sync themselves (two cross-thread wake-ups per call), and only one leader
/// blocks at a time while the others' calls queue without blocking (ADR 0006). It is a separate
/// file, so it cannot share a transaction with the stores (ADR 0003).
#[derive(Debug)]
pub struct JsonLinesAuditSink {
    path: PathBuf,
    /// Touched only by the leader of the batch being synced.
    file: Mutex<std::fs::File>,
    queue: Mutex<Queue>,
}

/// Lines waiting for the next sync, and the calls waiting on them.
#[derive(Debug, Default)]
struct Queue {
    bytes: Vec<u8>,
    waiting: std::collections::VecDeque<tokio::sync::oneshot::Sender<Turn>>,
    /// Whether a leader is syncing a batch (it hands over to a waiting call when done).
    leading: bool,
}

/// What a queued call is told.
#[derive(Debug)]
enum Turn {
    /// Its lines are in a batch that was synced (or failed).
    Done(Result<(), AuditError>),
    /// Its lines are still queued and it leads the next batch.
    Lead,
}

impl JsonLinesAuditSink {
    /// Opens (creating if needed) the file for appending.
    ///
    /// # Errors
    /// [`AuditError`] when the file cannot be opened.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AuditError> {
        let path = path.as_ref().to_path_buf();
        trim_torn_line(&path).map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        let mut options = crate::at_rest::private_file_options();
        options.create(true).append(true);
        // Every write is durable when it returns: one system call per batch instead of a write
        // and an `fdatasync`.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_DSYNC);
        let file = options
            .open(&path)
            .and_then(|file| crate::at_rest::narrow_file(&path).map(|()| file))
            .map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path,
            file: Mutex::new(file),
            queue: Mutex::new(Queue::default()),
        })
    }

    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The queue. Every change to it is a push, a take or a flag, complete before any code that
    /// could panic, so a poisoned lock still guards a consistent queue; recovering it keeps the
    /// lead from being lost with a panicking holder.
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lines of `records`, one JSON object each.
    fn lines<'a>(records: impl IntoIterator<Item = RecordRef<'a>>) -> Result<Vec<u8>, AuditError> {
        // Room for a typical call line (about 350 bytes), so the writer does not double its way
        // up from empty.
        let mut lines = Vec::with_capacity(512);
        for record in records {
            serde_json::to_writer(&mut lines, &record).map_err(|e| AuditError(e.to_string()))?;
            lines.push(b'\n');
        }
        Ok(lines)
    }

    /// The lines `events` take in the file, for [`JsonLinesAuditSink::write_lines`].
    ///
    /// # Errors
    /// [`AuditError`] when an event cannot be encoded.
    pub fn encode(events: &[AuditEvent]) -> Result<Vec<u8>, AuditError> {
        Self::lines(events.iter().map(RecordRef::Call))
    }

    /// Writes `lines` (made by [`JsonLinesAuditSink::encode`]) durably, on this thread, in one
    /// write: for a store's writer thread that commits the audit events of its writes with
    /// them, one write per batch (ADR 0012).
    ///
    /// # Errors
    /// [`AuditError`] when the write fails.
    pub fn write_lines(&self, lines: &[u8]) -> Result<(), AuditError> {
        self.file
            .lock()
            .map_err(|_| AuditError("the audit file is poisoned".to_owned()))
            .and_then(|mut file| {
                file.write_all(lines)
                    // Opened with `O_DSYNC` on Unix: there each write is durable when it returns.
                    .and_then(|()| if cfg!(unix) { Ok(()) } else { file.sync_data() })
                    .map_err(|e| AuditError(format!("{}: {e}", self.path.display())))
            })
    }

    async fn write<'a>(
        &self,
        records: impl IntoIterator<Item = RecordRef<'a>>,
    ) -> Result<(), AuditError> {
        let lines = Self::lines(records)?;
        let turn = {
            let mut queue = self.queue();
            if queue.bytes.is_empty() {
                // The first lines of a batch become its buffer rather than being copied into it.
                queue.bytes = lines;
            } else {
                queue.bytes.extend_from_slice(&lines);
            }
            if queue.leading {
                let (tell, told) = tokio::sync::oneshot::channel();
                queue.waiting.push_back(tell);
                Some(Queued {
                    sink: self,
                    told: Some(told),
                })
            } else {
                queue.leading = true;
                None
            }
        };
        if let Some(mut queued) = turn {
            let turn = match queued.told.as_mut() {
                Some(told) => told.await.ok(),
                None => None,
            };
            // Answered: nothing left for the drop guard to pass on.
            queued.told = None;
            match turn {
                Some(Turn::Done(result)) => return result,
                Some(Turn::Lead) => {}
                None => return Err(AuditError("the audit batch was abandoned".to_owned())),
            }
        }
        self.lead()
    }

    /// Writes and syncs everything queued (this call's lines among it), answers the calls
    /// whose lines were in it, and hands the lead to a call queued meanwhile. No await point:
    /// a leader is never cancelled halfway.
    fn lead(&self) -> Result<(), AuditError> {
        let (bytes, waiting) = {
            let mut queue = self.queue();
            (
                std::mem::take(&mut queue.bytes),
                std::mem::take(&mut queue.waiting),
            )
        };
        let result = self.write_lines(&bytes);
        for call in waiting {
            let _ = call.send(Turn::Done(result.clone()));
        }
        self.hand_over();
        result
    }

    /// Passes the lead to the first queued call still waiting, or gives it up when none is
    /// (the queued lines of dropped calls then go with the next batch).
    fn hand_over(&self) {
        let mut queue = self.queue();
        while let Some(next) = queue.waiting.pop_front() {
            if next.send(Turn::Lead).is_ok() {
                return;
            }
        }
        queue.leading = false;
    }
}

/// Cuts a last line without its newline: the write a crash interrupted, never acknowledged
/// (its call returns only after the whole batch is written). Lines appended later would
/// otherwise continue it and make one line of two records.
fn trim_torn_line(path: &Path) -> std::io::Result<()> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    const CHUNK: u64 = 64 * 1024;
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = Vec::new();
    // Scans back from the end for the last newline, a chunk at a time.
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(CHUNK);
        chunk.resize(usize::try_from(end - start).unwrap_or(0), 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    if keep < len {
        tracing::warn!(
            path = %path.display(),
            bytes = len - keep,
            "trimmed a torn last line from the audit file"
        );
        file.set_len(keep)?;
        file.sync_all()?;
    }
    Ok(())
}

/// A call queued behind a leader. Dropped before its answer (a cancelled call), it must not take
/// a lead handed to it into the grave: it passes the lead on.
struct Queued<'a> {
    sink: &'a JsonLinesAuditSink,
    told: Option<tokio::sync::oneshot::Receiver<Turn>>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(mut told) = self.told.take() {
            // Closing first makes the race with a leader's send decided: either the send
            // failed (the leader moves on) or the turn is here to read.
            told.close();
            if let Ok(Turn::Lead) = told.try_recv() {
                self.sink.hand_over();
            }
        }
    }
}

#[async_trait]
impl AuditSink for JsonLinesAuditSink {
    async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.write(events.iter().map(RecordRef::Call)).await
    }

    async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
        self.write([RecordRef::Access(event)]).await
    }
}

/// An [`AuditRecord`] by reference, so writing a line copies nothing.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum RecordRef<'a> {
    Call(&'a AuditEvent),
    Access(&'a AccessEvent),
}

/// Keeps events in memory, for embedding and tests.
#[derive(Debug, Default)]
pub struct InMemoryAuditSink {
    records: Mutex<Vec<AuditRecord>>,
}

impl InMemoryAuditSink {
    /// Every call event recorded so far.
    #[must_use]
    pub fn events(&self) -> Vec<AuditEvent> {
        self.records()
            .into_iter()
            .filter_map(|r| match r {
                AuditRecord::Call(e) => Some(e),
                AuditRecord::Access(_) => None,
            })
            .collect()
    }

    /// Every record, calls and refused requests, in order.
    #[must_use]
    pub fn records(&self) -> Vec<AuditRecord> {
        self.records.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn push(&self, records: impl IntoIterator<Item = AuditRecord>) -> Result<(), AuditError> {
        self.records
            .lock()
            .map_err(|_| AuditError("audit lock poisoned".to_owned()))?
            .extend(records);
        Ok(())
    }
}

#[async_trait]
impl AuditSink for InMemoryAuditSink {
    async fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.push(events.iter().cloned().map(AuditRecord::Call))
    }

    async fn append_access(&self, event: &AccessEvent) -> Result<(), AuditError> {
        self.push([AuditRecord::Access(event.clone())])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource: &str, outcome: AuditOutcome) -> AuditEvent {
        AuditEvent {
            principal: "local".into(),
            action: Action::ScenarioNext,
            tenant_id: TenantId::new(1).unwrap(),
            namespace_id: NamespaceId::new(1).unwrap(),
            resource: resource.into(),
            outcome,
            request_id: Some("req-1".into()),
            correlation_id: None,
            request_hash: None,
            credential: None,
        }
    }

    #[tokio::test]
    async fn json_lines_sink_appends_one_object_per_line_in_order_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let first = [
            event("run/a", AuditOutcome::Success),
            event(
                "run/b",
                AuditOutcome::Failure {
                    kind: "not_found".into(),
                },
            ),
        ];
        JsonLinesAuditSink::open(&path)
            .unwrap()
            .append(&first)
            .await
            .unwrap();
        let second = [event("run/c", AuditOutcome::Success)];
        JsonLinesAuditSink::open(&path)
            .unwrap()
            .append(&second)
            .await
            .unwrap();

        let text = std::fs::read_to_string(&path).unwrap();
        let read: Vec<AuditRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let written: Vec<AuditRecord> = [first.as_slice(), second.as_slice()]
            .concat()
            .into_iter()
            .map(AuditRecord::Call)
            .collect();
        assert_eq!(read, written);
        assert!(text.starts_with(r#"{"event":"call","#), "{text}");
        assert!(text.ends_with('\n'));
        assert!(
            text.contains(r#""outcome":{"result":"failure","kind":"not_found"}"#),
            "{text}"
        );
    }

    #[test]
    fn every_action_round_trips_through_its_name() {
        for action in Action::ALL {
            assert_eq!(Action::from_name(action.name()), Some(action));
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, serde_json::json!(action.name()));
        }
        assert_eq!(Action::from_name("scenario_delete"), None);
    }

    /// A queued call cancelled after the lead was handed to it passes the lead on, so the sink
    /// never stalls, and its queued lines go with the next batch.
    #[tokio::test]
    async fn a_cancelled_queued_call_passes_the_lead_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = JsonLinesAuditSink::open(&path).unwrap();
        // As if a leader were syncing: the next calls queue behind it.
        sink.queue().leading = true;
        let (b, c) = (
            [event("run/b", AuditOutcome::Success)],
            [event("run/c", AuditOutcome::Success)],
        );
        let mut queued_b = sink.append(&b);
        let mut queued_c = sink.append(&c);
        assert!(futures::poll!(&mut queued_b).is_pending());
        assert!(futures::poll!(&mut queued_c).is_pending());
        // The leader finishes and hands the lead to b, which is cancelled before it runs.
        sink.hand_over();
        drop(queued_b);
        // c received the lead from b's drop and syncs both.
        tokio::time::timeout(std::time::Duration::from_secs(10), queued_c)
            .await
            .expect("c was never handed the lead")
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("run/b") && text.contains("run/c"), "{text}");

        // With nobody left to take it, the lead is given up and the next call leads at once.
        sink.queue().leading = true;
        let d = [event("run/d", AuditOutcome::Success)];
        let mut queued_d = sink.append(&d);
        assert!(futures::poll!(&mut queued_d).is_pending());
        drop(queued_d);
        sink.hand_over();
        assert!(!sink.queue().leading);
        sink.append(&[event("run/e", AuditOutcome::Success)])
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_all_written_each_call_contiguous() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = std::sync::Arc::new(JsonLinesAuditSink::open(&path).unwrap());
        let calls = (0..64).map(|i| {
            let sink = sink.clone();
            tokio::spawn(async move {
                let pair = [
                    event(&format!("run/{i}/a"), AuditOutcome::Success),
                    event(&format!("run/{i}/b"), AuditOutcome::Success),
                ];
                sink.append(&pair).await
            })
        });
        for call in futures::future::join_all(calls).await {
            call.unwrap().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let resources: Vec<String> = text
            .lines()
            .map(|l| match serde_json::from_str::<AuditRecord>(l).unwrap() {
                AuditRecord::Call(e) => e.resource,
                AuditRecord::Access(_) => panic!("no access events were written"),
            })
            .collect();
        assert_eq!(resources.len(), 128);
        for pair in resources.chunks(2) {
            let run = pair[0].strip_suffix("/a").unwrap();
            assert_eq!(pair[1], format!("{run}/b"), "a call's lines stay together");
        }
    }

    #[tokio::test]
    async fn the_meter_counts_a_repeated_key_once_and_remembers_a_bounded_window() {
        let meter = InMemoryUsageMeter::default();
        let tenant = TenantId::new(3).unwrap();
        let usage = |key: String| UsageEvent {
            tenant_id: tenant,
            namespace_id: NamespaceId::new(1).unwrap(),
            metric: UsageMetric::ToolCalls,
            quantity: 1,
            idempotency_key: key,
        };
        meter.record(&[usage("k-0".into())]).await.unwrap();
        meter.record(&[usage("k-0".into())]).await.unwrap();
        assert_eq!(meter.total(tenant, UsageMetric::ToolCalls), 1);
        let window: Vec<_> = (1..=REMEMBERED_KEYS)
            .map(|i| usage(format!("k-{i}")))
            .collect();
        meter.record(&window).await.unwrap();
        // "k-0" fell out of the window: the memory stays bounded, and an ancient repeat counts.
        meter.record(&[usage("k-0".into())]).await.unwrap();
        assert_eq!(
            meter.total(tenant, UsageMetric::ToolCalls),
            2 + REMEMBERED_KEYS as u64
        );
    }

    #[tokio::test]
    async fn json_lines_sink_refuses_an_unwritable_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = JsonLinesAuditSink::open(dir.path().join("missing-dir").join("audit.jsonl"))
            .unwrap_err();
        assert!(err.0.contains("missing-dir"), "{err}");
    }

    /// The batch writer skips `fdatasync` on Unix because the file is opened with `O_DSYNC`:
    /// without the flag, acknowledged audit lines would sit in the page cache.
    #[cfg(target_os = "linux")]
    #[test]
    fn json_lines_sink_opens_its_file_for_durable_writes() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let sink = JsonLinesAuditSink::open(dir.path().join("audit.jsonl")).unwrap();
        let fd = sink.file.lock().unwrap().as_raw_fd();
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let flags = info
            .lines()
            .find_map(|line| line.strip_prefix("flags:"))
            .map(|octal| i32::from_str_radix(octal.trim(), 8).unwrap())
            .expect("fdinfo names the open flags");
        assert_ne!(flags & libc::O_DSYNC, 0, "flags {flags:o}");
        assert_ne!(flags & libc::O_APPEND, 0, "flags {flags:o}");
    }

    /// The audit file is the owner's alone: created 0600, narrowed to it when found wider.
    #[cfg(unix)]
    #[test]
    fn json_lines_sink_file_is_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        drop(JsonLinesAuditSink::open(&path).unwrap());
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(JsonLinesAuditSink::open(&path).unwrap());
        assert_eq!(mode(), 0o600);
    }

    /// A crash mid-write leaves a last line without its newline; opening the file again cuts
    /// it, so the next record starts a line of its own. Whole files and lines longer than the
    /// scan's chunk are kept as they are.
    #[tokio::test]
    async fn json_lines_sink_trims_a_line_torn_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let long = format!("{{\"pad\":\"{}\"}}\n", "x".repeat(200_000));
        for (before, kept) in [
            (format!("{long}{{\"torn"), long.clone()),
            ("{\"torn".to_owned(), String::new()),
            (long.clone(), long.clone()),
            (String::new(), String::new()),
        ] {
            std::fs::write(&path, &before).unwrap();
            let sink = JsonLinesAuditSink::open(&path).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), kept);
            sink.append(&[event("run/a", AuditOutcome::Success)])
                .await
                .unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let last = text
                .strip_prefix(kept.as_str())
                .expect("the kept lines first");
            assert_eq!(last.lines().count(), 1, "{last}");
            serde_json::from_str::<AuditRecord>(last.trim_end()).expect("a whole record");
        }
    }

    #[tokio::test]
    async fn scope_authorizer_hides_other_scopes_and_denies_missing_actions() {
        let mut ctx =
            RequestContext::local(TenantId::new(1).unwrap(), NamespaceId::new(2).unwrap());
        assert_eq!(
            ScopeAuthorizer
                .authorize(&ctx, Action::ScenarioNext, &Resource::new("run", "r"))
                .await,
            Ok(())
        );
        ctx.principal.namespace_id = Some(NamespaceId::new(3).unwrap());
        assert_eq!(
            ScopeAuthorizer
                .authorize(&ctx, Action::ScenarioNext, &Resource::new("run", "r"))
                .await,
            Err(AuthzError::OutOfScope)
        );
        ctx.principal.namespace_id = None;
        ctx.principal.tenant_id = Some(TenantId::new(9).unwrap());
        assert_eq!(
            ScopeAuthorizer
                .authorize(&ctx, Action::ScenarioNext, &Resource::new("run", "r"))
                .await,
            Err(AuthzError::OutOfScope)
        );
        ctx.principal.tenant_id = Some(TenantId::new(1).unwrap());
        ctx.principal.actions = Some([Action::ScenarioStatus].into());
        assert!(matches!(
            ScopeAuthorizer
                .authorize(&ctx, Action::ScenarioNext, &Resource::new("run", "r"))
                .await,
            Err(AuthzError::Denied(_))
        ));
    }
}
