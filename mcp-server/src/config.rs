//! `decision-gate.toml`: the data directory, the engine settings, the built-in providers and the
//! server (transport, authentication, limits, audit). Unknown keys are refused with their path,
//! relative paths are resolved against the file's directory, and every rule is checked before
//! anything is served.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use decision_gate_core::engine::from_json_value;
use decision_gate_core::provider::ProviderContract;
use decision_gate_core::providers::{
    EnvConfig, EnvProvider, HttpConfig, HttpProvider, JsonConfig, JsonProvider, TimeConfig,
    TimeProvider,
};
use decision_gate_core::runpack::{SigningKey, VerifyOptions, VerifyingKey};
use decision_gate_core::sqlite::GroupCommit;
use decision_gate_core::{
    Action, EngineConfig, EvidenceProvider, HashAlgorithm, NamespaceId, ProviderRegistry, TenantId,
    TrustLane,
};

use crate::external::{self, Endpoint, ExternalSettings};
use serde::{Deserialize, Serialize};

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "DECISION_GATE_CONFIG";

/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, evidence and runpacks live.
    pub data_dir: Option<PathBuf>,
    /// Where scenarios, runs, schemas and runpacks are kept: `store = "sqlite"` (durable, the
    /// default) or `store = "memory"` (lost on exit; for development and benchmarks), or a
    /// `[store]` table with `kind` and the `[store.sqlite]` settings.
    pub store: StoreConfig,
    /// Engine settings: logic mode, trust, anchors, limits.
    pub engine: EngineConfig,
    /// Built-in providers.
    pub providers: Providers,
    /// Evidence disclosure.
    pub evidence: EvidenceConfig,
    /// The MCP server.
    pub server: ServerConfig,
    /// Runpack signing and verification.
    pub runpacks: RunpacksConfig,
    /// Set by a composition root that authenticates every network caller itself (the
    /// enterprise server's API keys and identity providers): then `local_only` means "no
    /// configured credentials", never "loopback callers are trusted", and a non-loopback
    /// address needs no configured token. Not a configuration key.
    #[serde(skip)]
    pub authentication_supplied: bool,
}

/// `[runpacks]`: how exported runpacks are signed and what verification trusts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunpacksConfig {
    /// A file holding the ed25519 key that signs every exported runpack's manifest: its
    /// 32-byte seed as 64 hex digits. It must be readable by its owner only.
    pub signing_key_file: Option<PathBuf>,
    /// ed25519 public keys (64 hex digits each) trusted to sign runpacks. When any is set,
    /// verification fails for a runpack without a signature by one of them. The public key of
    /// `signing_key_file` is always trusted.
    pub trusted_keys: Vec<String>,
}

/// The storage backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// SQLite and runpack files under the data directory.
    #[default]
    Sqlite,
    /// In memory, lost on exit.
    Memory,
}

/// `store`: the backend and its settings. Written as the backend's name alone
/// (`store = "sqlite"`) or as a table (`[store]` with `kind`, and `[store.sqlite]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StoreConfig {
    /// The backend.
    pub kind: StoreKind,
    /// `[store.sqlite]`, when given.
    pub sqlite: Option<SqliteConfig>,
}

impl StoreConfig {
    /// The SQLite settings, the defaults when `[store.sqlite]` is absent.
    #[must_use]
    pub fn sqlite(&self) -> SqliteConfig {
        self.sqlite.unwrap_or_default()
    }
}

/// `[store.sqlite]`: the embedded store's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SqliteConfig {
    /// How concurrent writes share one commit (ADR 0012).
    pub group_commit: GroupCommit,
}

/// The table form of `store`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreTable {
    #[serde(default)]
    kind: StoreKind,
    #[serde(default)]
    sqlite: Option<SqliteConfig>,
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = StoreConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("\"sqlite\", \"memory\", or a table with `kind` and `sqlite`")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<StoreConfig, E> {
                let kind =
                    StoreKind::deserialize(serde::de::value::StrDeserializer::<E>::new(name))?;
                Ok(StoreConfig { kind, sqlite: None })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<StoreConfig, A::Error> {
                let table =
                    StoreTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(StoreConfig {
                    kind: table.kind,
                    sqlite: table.sqlite,
                })
            }
        }
        deserializer.deserialize_any(Form)
    }
}

/// Built-in provider sections; a present section switches the provider on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Providers {
    /// The `time` provider (always on).
    pub time: TimeConfig,
    /// The `env` provider.
    pub env: Option<EnvConfig>,
    /// The `json` provider.
    pub json: Option<JsonConfig>,
    /// The `http` provider.
    pub http: Option<HttpConfig>,
    /// External MCP providers.
    pub mcp: Vec<McpProviderConfig>,
}

impl Providers {
    /// The registry these sections describe (`time` always), problems named under `prefix`
    /// (`providers`, or a tenant's section on the enterprise server).
    pub fn build(
        &self,
        prefix: &str,
        hash_algorithm: HashAlgorithm,
        problems: &mut Vec<Problem>,
    ) -> ProviderRegistry {
        let mut registry = ProviderRegistry::new();
        let mut add =
            |path: &str, provider: Result<Arc<dyn EvidenceProvider>, String>| match provider
                .and_then(|p| registry.register(p).map_err(|e| e.to_string()))
            {
                Ok(()) => {}
                Err(message) => problems.push(Problem::new(format!("{prefix}.{path}"), message)),
            };
        add("time", Ok(Arc::new(TimeProvider::new(self.time.clone()))));
        if let Some(env) = &self.env {
            add("env", Ok(Arc::new(EnvProvider::new(env.clone()))));
        }
        if let Some(json) = &self.json {
            add(
                "json",
                JsonProvider::new(json.clone())
                    .map(|p| Arc::new(p) as Arc<dyn EvidenceProvider>)
                    .map_err(|e| e.to_string()),
            );
        }
        if let Some(http) = &self.http {
            add(
                "http",
                HttpProvider::new(http.clone())
                    .map(|p| Arc::new(p) as Arc<dyn EvidenceProvider>)
                    .map_err(|e| e.to_string()),
            );
        }
        for (i, provider) in self.mcp.iter().enumerate() {
            add(
                &format!("mcp[{i}]"),
                external_settings(provider, hash_algorithm).map(external::provider),
            );
        }
        registry
    }

    /// The sections beyond `time` that are switched on.
    #[must_use]
    pub fn switched_on(&self) -> Vec<&'static str> {
        [
            (self.env.is_some(), "env"),
            (self.json.is_some(), "json"),
            (self.http.is_some(), "http"),
            (!self.mcp.is_empty(), "mcp"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }

    /// Resolves the relative paths of these sections against `base` (the configuration
    /// file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(json) = self.json.as_mut()
            && json.root.is_relative()
        {
            json.root = base.join(&json.root);
        }
        for provider in &mut self.mcp {
            if provider.contract.is_relative() {
                provider.contract = base.join(&provider.contract);
            }
        }
    }
}

/// The settings of one external provider: its endpoint, contract and keys checked.
fn external_settings(
    p: &McpProviderConfig,
    hash_algorithm: HashAlgorithm,
) -> Result<ExternalSettings, String> {
    let endpoint = match (&p.command, &p.url) {
        (Some(command), None) => {
            let (program, args) = command
                .split_first()
                .ok_or("command: must name a program")?;
            Endpoint::Stdio {
                program: program.clone(),
                args: args.to_vec(),
            }
        }
        (None, Some(url)) => {
            let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|prefix| url.starts_with(prefix));
            if !url.starts_with("https://")
                && !(url.starts_with("http://") && (loopback || p.allow_insecure_http))
            {
                return Err(format!(
                    "url: {url:?} must be https:// (http:// only to loopback, or with allow_insecure_http)"
                ));
            }
            let bearer_token = match &p.bearer_token_env {
                None => None,
                Some(var) => Some(std::env::var(var).map_err(|_| {
                    format!("bearer_token_env: the environment variable {var} is not set")
                })?),
            };
            Endpoint::Http {
                url: url.clone(),
                bearer_token,
            }
        }
        _ => return Err("set exactly one of command (stdio) or url (HTTP)".to_owned()),
    };
    if p.timeout_ms == 0 {
        return Err("timeout_ms: must be at least 1".to_owned());
    }
    if p.max_response_bytes == 0 {
        return Err("max_response_bytes: must be at least 1".to_owned());
    }
    let contract = read_contract(&p.contract)?;
    if contract.provider_id.as_str() != p.provider_id {
        return Err(format!(
            "contract: declares provider {:?}, not {:?}",
            contract.provider_id.as_str(),
            p.provider_id
        ));
    }
    let signing_keys = p
        .signing_keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(key, &mut bytes)
                .ok()
                .and_then(|()| VerifyingKey::from_bytes(&bytes).ok())
                .ok_or_else(|| {
                    format!("signing_keys[{i}]: not a hex ed25519 public key (64 hex digits)")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ExternalSettings {
        endpoint,
        contract,
        timeout: std::time::Duration::from_millis(p.timeout_ms),
        max_response_bytes: p.max_response_bytes,
        lane: p.lane,
        signing_keys,
        hash_algorithm,
    })
}

/// An external evidence provider: an MCP server offering an `evidence_query` tool.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpProviderConfig {
    /// The provider id conditions name; must equal the contract's.
    pub provider_id: String,
    /// A stdio provider: the program and its arguments.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// A Streamable HTTP provider: the endpoint URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Allow `http://` to a non-loopback host (never recommended).
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// An environment variable holding a bearer token to send to an HTTP provider.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// The capability contract file (JSON): `{provider_id, description, checks}`.
    pub contract: PathBuf,
    /// How long one query may take, in milliseconds.
    #[serde(default = "default_provider_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest answer accepted, in bytes.
    #[serde(default = "default_provider_max_response_bytes")]
    pub max_response_bytes: usize,
    /// The highest trust lane its answers are placed in.
    #[serde(default = "default_provider_lane")]
    pub lane: TrustLane,
    /// Hex ed25519 public keys; when any is set, every answer must be signed by one of them
    /// over its evidence digest (`key_id` is the key's hex).
    #[serde(default)]
    pub signing_keys: Vec<String>,
}

fn default_provider_timeout_ms() -> u64 {
    5_000
}

fn default_provider_max_response_bytes() -> usize {
    1024 * 1024
}

fn default_provider_lane() -> TrustLane {
    TrustLane::Verified
}

/// What callers may see of raw evidence.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceConfig {
    /// Whether `evidence_query` and evidence-level feedback return raw values; digests are
    /// always returned.
    pub disclose_raw_values: bool,
}

/// The MCP server.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The Streamable HTTP address, when serving HTTP (`--http` overrides it).
    pub bind: Option<SocketAddr>,
    /// Who terminates TLS: this server (`server`, needs `[server.tls]` on a non-loopback
    /// address) or a proxy in front of it (`upstream`).
    pub tls_termination: TlsTermination,
    /// Host names accepted in the `Host` header besides loopback and the bind address (DNS
    /// rebinding protection).
    pub allowed_hosts: Vec<String>,
    /// How long one HTTP request may take, in milliseconds.
    pub request_timeout_ms: u64,
    /// Request limits.
    pub limits: LimitsConfig,
    /// Authentication.
    pub auth: AuthConfig,
    /// TLS for the HTTP transport.
    pub tls: Option<TlsConfig>,
    /// The audit trail.
    pub audit: AuditConfig,
    /// `scenario_next` feedback levels.
    pub feedback: FeedbackConfig,
    /// `GET /metrics`.
    pub metrics: MetricsConfig,
}

/// Who may read `GET /metrics`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Callers must authenticate like `/mcp` callers (the `Host` allowlist applies either way).
    pub require_auth: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: None,
            tls_termination: TlsTermination::Server,
            allowed_hosts: Vec::new(),
            request_timeout_ms: 30_000,
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            tls: None,
            audit: AuditConfig::default(),
            feedback: FeedbackConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// Who terminates TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsTermination {
    /// This server, with `[server.tls]`.
    #[default]
    Server,
    /// A proxy in front of this server.
    Upstream,
}

/// Request limits.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body, in bytes (HTTP) or line (stdio).
    pub max_body_bytes: usize,
    /// Requests served at once; more are refused as overloaded.
    pub max_inflight: usize,
    /// Per-principal rate limit; none when absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Requests one principal may have between authentication and answer; more are refused
    /// as rate limited, so one caller cannot take the whole in-flight budget.
    pub max_inflight_per_principal: usize,
    /// How long an HTTP/1 client may take to send a request's headers, in milliseconds.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body once authenticated, in
    /// milliseconds (HTTP and gRPC).
    pub body_timeout_ms: u64,
    /// Connections open at once on this server, all listeners together; more are closed as
    /// they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one source address (IPv6 by /64).
    pub max_connections_per_source: usize,
    /// The authentication-failure budget per source address.
    pub auth_failures: AuthFailuresConfig,
    /// `WatchRun` streams.
    pub watch: WatchLimits,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_inflight: 256,
            rate_limit: None,
            max_inflight_per_principal: 64,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            max_connections: 4096,
            max_connections_per_source: 256,
            auth_failures: AuthFailuresConfig::default(),
            watch: WatchLimits::default(),
        }
    }
}

/// The authentication-failure budget per source address (`server.limits.auth_failures`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthFailuresConfig {
    /// Failures per minute a source may make, sustained.
    pub per_minute: u32,
    /// Failures a source may make at once above the sustained rate.
    pub burst: u32,
    /// The window over which a source's suppressed refusals are counted into one audit event.
    pub audit_window_ms: u64,
}

impl Default for AuthFailuresConfig {
    fn default() -> Self {
        Self {
            per_minute: 60,
            burst: 20,
            audit_window_ms: 10_000,
        }
    }
}

/// Bounds on `WatchRun` streams.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchLimits {
    /// Streams open at once on this server.
    pub max_streams: usize,
    /// Streams one principal may hold open.
    pub max_per_principal: usize,
    /// A stream with no decision to send for this long ends (the client reopens it after the
    /// last decision it saw), in milliseconds.
    pub idle_timeout_ms: u64,
    /// A stream ends after this long whatever it sends, in milliseconds.
    pub max_lifetime_ms: u64,
}

impl Default for WatchLimits {
    fn default() -> Self {
        Self {
            max_streams: 256,
            max_per_principal: 8,
            idle_timeout_ms: 300_000,
            max_lifetime_ms: 3_600_000,
        }
    }
}

/// A per-principal rate limit (GCRA): a sustained rate and a burst.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// How callers authenticate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The mode.
    pub mode: AuthMode,
    /// Bearer tokens (mode `bearer`).
    pub tokens: Vec<TokenConfig>,
    /// Client certificates (mode `mtls`).
    pub clients: Vec<ClientConfig>,
}

/// Authentication modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// stdio and loopback HTTP only; the caller is unrestricted.
    #[default]
    LocalOnly,
    /// `Authorization: Bearer <token>` with a configured token.
    Bearer,
    /// A client certificate verified against `server.tls.client_ca_path`.
    Mtls,
}

/// A principal's scope: which tenant, namespace and tools it may use.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeConfig {
    /// The only tenant it may act in; any when absent.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The only namespace it may act in; any when absent.
    #[serde(default)]
    pub namespace_id: Option<NamespaceId>,
    /// The tools it may call; all when absent.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
}

/// One bearer token, stored as its SHA-256 digest.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The principal the token authenticates.
    pub subject: String,
    /// Lower-case hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub token_sha256: String,
    /// Its scope.
    #[serde(flatten)]
    pub scope: ScopeConfig,
}

/// One client certificate subject.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The certificate subject's common name (CN).
    pub subject: String,
    /// Its scope.
    #[serde(flatten)]
    pub scope: ScopeConfig,
}

/// TLS for the HTTP transport.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server certificate chain (PEM).
    pub cert_path: PathBuf,
    /// The server key (PEM).
    pub key_path: PathBuf,
    /// CA certificates client certificates must chain to (PEM); required for `mtls`.
    #[serde(default)]
    pub client_ca_path: Option<PathBuf>,
}

/// The audit trail.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file (default `<data_dir>/audit.jsonl`).
    pub path: Option<PathBuf>,
    /// The key of the digests of presented credentials in audit events (default
    /// `<data_dir>/audit-digest.key`, created on first start).
    pub digest_key_path: Option<PathBuf>,
}

/// `scenario_next` feedback levels: how much of the gate evaluation a caller sees.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// The level when the request names none.
    pub default: FeedbackLevel,
    /// The highest level any request gets; higher requests are lowered to it.
    pub max: FeedbackLevel,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            default: FeedbackLevel::Summary,
            max: FeedbackLevel::Trace,
        }
    }
}

/// How much of a decision's evaluation `scenario_next` returns.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackLevel {
    /// The decision, its packets and the run status.
    Summary,
    /// Plus each gate's evaluation and trace.
    Trace,
    /// Plus each condition's evidence (raw values only when disclosure allows).
    Evidence,
}

/// One configuration problem: the key's path and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key's path, `$` for the whole file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Problems as one line (`path: message; ...`), for an error message.
#[must_use]
pub fn joined(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A configuration that passed every check, with its providers built.
pub struct Loaded {
    /// The configuration, relative paths resolved.
    pub config: Config,
    /// The providers it switches on.
    pub providers: ProviderRegistry,
    /// The key that signs exported runpacks (`runpacks.signing_key_file`).
    pub runpack_signer: Option<SigningKey>,
    /// How runpacks are verified: every decision replayed, signatures checked against the
    /// trusted keys.
    pub runpack_verify: VerifyOptions,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("config", &self.config)
            .field("providers", &self.providers)
            .field("signs_runpacks", &self.runpack_signer.is_some())
            .field("runpack_verify", &self.runpack_verify)
            .finish()
    }
}

impl RunpacksConfig {
    /// The signing key and the verification options, or the problems that prevent them.
    fn build(&self, problems: &mut Vec<Problem>) -> (Option<SigningKey>, VerifyOptions) {
        let mut trusted_keys = Vec::new();
        for (i, text) in self.trusted_keys.iter().enumerate() {
            match public_key(text) {
                Some(key) => trusted_keys.push(key),
                None => problems.push(Problem::new(
                    format!("runpacks.trusted_keys[{i}]"),
                    "not an ed25519 public key (64 hex digits)",
                )),
            }
        }
        let signer = self.signing_key_file.as_ref().and_then(|file| {
            read_signing_key(file)
                .map_err(|message| {
                    problems.push(Problem::new("runpacks.signing_key_file", message))
                })
                .ok()
        });
        if let Some(key) = &signer
            && !trusted_keys.is_empty()
            && !trusted_keys.contains(&key.verifying_key())
        {
            // A server that signs with a key its own verification does not trust would fail
            // every runpack it exports.
            trusted_keys.push(key.verifying_key());
        }
        let verify = VerifyOptions {
            replay: true,
            trusted_keys,
        };
        (signer, verify)
    }
}

fn public_key(text: &str) -> Option<VerifyingKey> {
    let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Reads an ed25519 signing key file: the seed as 64 hex digits, readable by its owner only.
fn read_signing_key(file: &Path) -> Result<SigningKey, String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if !meta.is_file() || meta.len() > 1024 {
        return Err(format!(
            "{}: must be a regular file of 64 hex digits",
            file.display()
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: is readable by others (mode {mode:03o}); allow its owner only (chmod 600)",
                file.display()
            ));
        }
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            format!(
                "{}: must hold an ed25519 seed as 64 hex digits",
                file.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads and checks a configuration file.
///
/// # Errors
/// Every problem found, each naming its key; an unreadable file is one problem at `$`.
pub fn load(file: &Path) -> Result<Loaded, Vec<Problem>> {
    parse(&read_file(file)?, &base_dir(file))
}

/// Reads a configuration file of at most 1 MiB.
///
/// # Errors
/// An unreadable or oversized file, as one problem at `$`.
pub fn read_file(file: &Path) -> Result<String, Vec<Problem>> {
    let size = std::fs::metadata(file)
        .map_err(|e| vec![Problem::new("$", format!("{}: {e}", file.display()))])?
        .len();
    if size > MAX_CONFIG_BYTES {
        return Err(vec![Problem::new(
            "$",
            format!("the file is {size} bytes; the limit is {MAX_CONFIG_BYTES} bytes"),
        )]);
    }
    std::fs::read_to_string(file)
        .map_err(|e| vec![Problem::new("$", format!("{}: {e}", file.display()))])
}

/// The directory relative paths in `file` are resolved against.
#[must_use]
pub fn base_dir(file: &Path) -> PathBuf {
    file.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Parses and checks configuration text; relative paths are resolved against `base`.
///
/// # Errors
/// Every problem found, each naming its key.
pub fn parse(text: &str, base: &Path) -> Result<Loaded, Vec<Problem>> {
    parse_table(read_table(text)?, base)
}

/// Parses TOML text into a table, a syntax error being one problem at `$`.
///
/// # Errors
/// The syntax error.
pub fn read_table(text: &str) -> Result<toml::Table, Vec<Problem>> {
    text.parse()
        .map_err(|e: toml::de::Error| vec![Problem::new("$", e.to_string().trim())])
}

/// Checks a parsed configuration table (a caller that adds sections of its own removes them
/// first); relative paths are resolved against `base`.
///
/// # Errors
/// Every problem found, each naming its key.
pub fn parse_table(table: toml::Table, base: &Path) -> Result<Loaded, Vec<Problem>> {
    parse_table_with(table, base, false)
}

/// [`parse_table`] for a composition root that authenticates every network caller itself
/// (`authentication_supplied`, see [`Config::authentication_supplied`]).
///
/// # Errors
/// Every problem found, each naming its key.
pub fn parse_table_with(
    table: toml::Table,
    base: &Path,
    authentication_supplied: bool,
) -> Result<Loaded, Vec<Problem>> {
    let value = serde_json::to_value(table).map_err(|e| vec![Problem::new("$", e.to_string())])?;
    let mut config: Config =
        from_json_value(value).map_err(|e| vec![Problem::new(e.path, e.rule)])?;
    config.authentication_supplied = authentication_supplied;
    config.resolve_paths(base);
    let mut problems = config.problems();
    let providers =
        config
            .providers
            .build("providers", config.engine.hash_algorithm, &mut problems);
    let (runpack_signer, runpack_verify) = config.runpacks.build(&mut problems);
    if problems.is_empty() {
        Ok(Loaded {
            config,
            providers,
            runpack_signer,
            runpack_verify,
        })
    } else {
        Err(problems)
    }
}

impl Config {
    /// The defaults: local-only, the `time` provider, data under `data_dir`.
    #[must_use]
    pub fn defaults() -> Loaded {
        let config = Self::default();
        let mut problems = Vec::new();
        let providers =
            config
                .providers
                .build("providers", config.engine.hash_algorithm, &mut problems);
        let (runpack_signer, runpack_verify) = config.runpacks.build(&mut problems);
        debug_assert!(problems.is_empty(), "{problems:?}");
        Loaded {
            config,
            providers,
            runpack_signer,
            runpack_verify,
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(dir) = self.data_dir.as_mut() {
            resolve(dir);
        }
        if let Some(key) = self.runpacks.signing_key_file.as_mut() {
            resolve(key);
        }
        self.providers.resolve_paths(base);
        if let Some(path) = self.server.audit.path.as_mut() {
            resolve(path);
        }
        if let Some(path) = self.server.audit.digest_key_path.as_mut() {
            resolve(path);
        }
        if let Some(tls) = self.server.tls.as_mut() {
            resolve(&mut tls.cert_path);
            resolve(&mut tls.key_path);
            if let Some(ca) = tls.client_ca_path.as_mut() {
                resolve(ca);
            }
        }
    }

    /// Every rule the values break (types and unknown keys were checked while parsing).
    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (name, rule) in self.engine.limits.problems() {
            problems.push(Problem::new(format!("engine.limits.{name}"), rule));
        }
        for (key, value) in [
            (
                "server.limits.max_body_bytes",
                self.server.limits.max_body_bytes,
            ),
            (
                "server.limits.max_inflight",
                self.server.limits.max_inflight,
            ),
            (
                "server.limits.max_inflight_per_principal",
                self.server.limits.max_inflight_per_principal,
            ),
            (
                "server.limits.max_connections",
                self.server.limits.max_connections,
            ),
            (
                "server.limits.max_connections_per_source",
                self.server.limits.max_connections_per_source,
            ),
            (
                "server.limits.watch.max_streams",
                self.server.limits.watch.max_streams,
            ),
            (
                "server.limits.watch.max_per_principal",
                self.server.limits.watch.max_per_principal,
            ),
        ] {
            if value == 0 {
                problems.push(Problem::new(key, "must be at least 1"));
            }
        }
        if let Some(rate) = &self.server.limits.rate_limit {
            if rate.requests_per_second == 0 {
                problems.push(Problem::new(
                    "server.limits.rate_limit.requests_per_second",
                    "must be at least 1",
                ));
            }
            if rate.burst == 0 {
                problems.push(Problem::new(
                    "server.limits.rate_limit.burst",
                    "must be at least 1",
                ));
            }
        }
        if self.store.kind != StoreKind::Sqlite && self.store.sqlite.is_some() {
            problems.push(Problem::new(
                "store.sqlite",
                "applies only to store.kind = \"sqlite\"",
            ));
        }
        for (field, rule) in self.store.sqlite().group_commit.problems() {
            problems.push(Problem::new(
                format!("store.sqlite.group_commit.{field}"),
                rule,
            ));
        }
        let limits = &self.server.limits;
        for (key, value) in [
            ("server.request_timeout_ms", self.server.request_timeout_ms),
            ("server.limits.header_timeout_ms", limits.header_timeout_ms),
            ("server.limits.body_timeout_ms", limits.body_timeout_ms),
            (
                "server.limits.auth_failures.per_minute",
                u64::from(limits.auth_failures.per_minute),
            ),
            (
                "server.limits.auth_failures.burst",
                u64::from(limits.auth_failures.burst),
            ),
            (
                "server.limits.auth_failures.audit_window_ms",
                limits.auth_failures.audit_window_ms,
            ),
            (
                "server.limits.watch.idle_timeout_ms",
                limits.watch.idle_timeout_ms,
            ),
            (
                "server.limits.watch.max_lifetime_ms",
                limits.watch.max_lifetime_ms,
            ),
        ] {
            if value == 0 {
                problems.push(Problem::new(key, "must be at least 1"));
            }
        }
        let feedback = &self.server.feedback;
        if feedback.default > feedback.max {
            problems.push(Problem::new(
                "server.feedback.default",
                "must not be above server.feedback.max",
            ));
        }
        self.auth_problems(&mut problems);
        problems
    }

    fn auth_problems(&self, problems: &mut Vec<Problem>) {
        let auth = &self.server.auth;
        let check_tools = |path: String, scope: &ScopeConfig, problems: &mut Vec<Problem>| {
            for (i, tool) in scope.tools.iter().flatten().enumerate() {
                if Action::from_name(tool).is_none() {
                    problems.push(Problem::new(
                        format!("{path}.tools[{i}]"),
                        format!("unknown tool {tool:?}"),
                    ));
                }
            }
        };
        for (i, token) in auth.tokens.iter().enumerate() {
            let path = format!("server.auth.tokens[{i}]");
            if token.subject.trim().is_empty() {
                problems.push(Problem::new(format!("{path}.subject"), "must not be empty"));
            }
            let digest = &token.token_sha256;
            if digest.len() != 64
                || !digest
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                problems.push(Problem::new(
                    format!("{path}.token_sha256"),
                    "must be 64 lower-case hex digits (the SHA-256 of the token)",
                ));
            }
            check_tools(path, &token.scope, problems);
        }
        for (i, client) in auth.clients.iter().enumerate() {
            let path = format!("server.auth.clients[{i}]");
            if client.subject.trim().is_empty() {
                problems.push(Problem::new(format!("{path}.subject"), "must not be empty"));
            }
            check_tools(path, &client.scope, problems);
        }
        match auth.mode {
            AuthMode::Bearer if auth.tokens.is_empty() => problems.push(Problem::new(
                "server.auth.tokens",
                "mode \"bearer\" needs at least one token",
            )),
            AuthMode::Mtls => {
                if auth.clients.is_empty() {
                    problems.push(Problem::new(
                        "server.auth.clients",
                        "mode \"mtls\" needs at least one client",
                    ));
                }
                if self
                    .server
                    .tls
                    .as_ref()
                    .is_none_or(|t| t.client_ca_path.is_none())
                {
                    problems.push(Problem::new(
                        "server.tls.client_ca_path",
                        "mode \"mtls\" needs the CA that client certificates chain to",
                    ));
                }
                if self.server.tls_termination == TlsTermination::Upstream {
                    problems.push(Problem::new(
                        "server.tls_termination",
                        "mode \"mtls\" verifies certificates itself; it cannot sit behind a TLS-terminating proxy",
                    ));
                }
            }
            _ => {}
        }
        if let Some(bind) = self.server.bind {
            self.exposure_problems(bind, "server.bind", problems);
        }
    }

    /// Rules for serving HTTP on `bind`: a non-loopback address needs authentication and TLS
    /// (or TLS terminated upstream).
    pub fn exposure_problems(&self, bind: SocketAddr, path: &str, problems: &mut Vec<Problem>) {
        if bind.ip().is_loopback() {
            return;
        }
        if self.server.auth.mode == AuthMode::LocalOnly && !self.authentication_supplied {
            problems.push(Problem::new(
                path,
                format!(
                    "{bind} is not a loopback address: set server.auth.mode to \"bearer\" or \"mtls\""
                ),
            ));
        }
        if self.server.tls.is_none() && self.server.tls_termination == TlsTermination::Server {
            problems.push(Problem::new(
                path,
                format!(
                    "{bind} is not a loopback address: configure [server.tls], or set server.tls_termination = \"upstream\" behind a TLS proxy"
                ),
            ));
        }
    }

    /// The data directory: the configured one, else `dg-data` in the working directory.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("dg-data"))
    }
}

/// Reads a provider contract file (at most 1 MiB of JSON).
fn read_contract(path: &Path) -> Result<ProviderContract, String> {
    let named = |e: &dyn std::fmt::Display| format!("contract: {}: {e}", path.display());
    let size = std::fs::metadata(path).map_err(|e| named(&e))?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(named(&format!(
            "the file is {size} bytes; the limit is {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| named(&e))?;
    decision_gate_core::engine::parse_json(
        &text,
        usize::try_from(MAX_CONFIG_BYTES).unwrap_or(usize::MAX),
    )
    .map_err(|e| named(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/dg")) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_empty_file_is_local_only_with_the_time_provider() {
        let loaded = parse("", Path::new(".")).unwrap();
        assert_eq!(loaded.config.server.auth.mode, AuthMode::LocalOnly);
        let ids: Vec<_> = loaded
            .providers
            .contracts()
            .map(|c| c.provider_id.to_string())
            .collect();
        assert_eq!(ids, ["time"]);
    }

    /// `store` is a backend's name or a table with the SQLite settings; group commit is on by
    /// default, its settings are checked by name, and SQLite settings beside another backend
    /// are refused rather than ignored.
    #[test]
    fn the_store_is_a_name_or_a_table_with_group_commit_settings() {
        let store = |text: &str| parse(text, Path::new(".")).unwrap().config.store;
        assert_eq!(store("").kind, StoreKind::Sqlite);
        assert!(store("").sqlite().group_commit.enabled);
        assert_eq!(store("store = \"memory\"\n").kind, StoreKind::Memory);
        let table = store(
            "[store.sqlite.group_commit]\nmax_batch = 16\nmax_wait_us = 0\nenabled = false\n",
        );
        assert_eq!(table.kind, StoreKind::Sqlite);
        let group = table.sqlite().group_commit;
        assert_eq!(
            (group.enabled, group.max_batch, group.max_wait_us),
            (false, 16, 0)
        );
        assert_eq!(
            group.max_batch_bytes,
            GroupCommit::default().max_batch_bytes
        );

        let found = problems(
            "[store.sqlite.group_commit]\nmax_batch = 0\nmax_batch_bytes = 0\nmax_wait_us = 100001\n",
        );
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(
            found[0].starts_with("store.sqlite.group_commit.max_batch: must be 1..="),
            "{found:?}"
        );
        assert!(
            found[1].starts_with("store.sqlite.group_commit.max_batch_bytes: "),
            "{found:?}"
        );
        assert!(
            found[2].contains("max_wait_us: must be at most 100000"),
            "{found:?}"
        );

        let found =
            problems("[store]\nkind = \"memory\"\n[store.sqlite.group_commit]\nmax_batch = 2\n");
        assert_eq!(
            found,
            ["store.sqlite: applies only to store.kind = \"sqlite\""]
        );
        let found = problems("[store.sqlite.group_commit]\nmax_batches = 2\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("store.sqlite.group_commit"),
            "{found:?}"
        );
        assert!(found[0].contains("max_batches"), "{found:?}");
        let found = problems("store = \"postgres\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("store: "), "{found:?}");
    }

    #[test]
    fn unknown_server_keys_are_named_by_path() {
        let found = problems("[server.limits]\nmax_inflight = 4\nmax_infligt = 5\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("server.limits"), "{found:?}");
        assert!(found[0].contains("max_infligt"), "{found:?}");
    }

    #[test]
    fn a_public_bind_needs_auth_and_tls() {
        let found = problems("[server]\nbind = \"0.0.0.0:8080\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().all(|p| p.starts_with("server.bind:")),
            "{found:?}"
        );
        let token = "a".repeat(64);
        let upstream = format!(
            "[server]\nbind = \"0.0.0.0:8080\"\ntls_termination = \"upstream\"\n[server.auth]\nmode = \"bearer\"\n[[server.auth.tokens]]\nsubject = \"ci\"\ntoken_sha256 = \"{token}\"\n"
        );
        assert_eq!(problems(&upstream), Vec::<String>::new());
    }

    #[test]
    fn tokens_must_be_digests_and_tools_must_exist() {
        let found = problems(
            "[server.auth]\nmode = \"bearer\"\n[[server.auth.tokens]]\nsubject = \"ci\"\ntoken_sha256 = \"secret\"\ntools = [\"scenario_next\", \"scenario_delete\"]\n",
        );
        assert_eq!(
            found,
            [
                "server.auth.tokens[0].token_sha256: must be 64 lower-case hex digits (the SHA-256 of the token)",
                "server.auth.tokens[0].tools[1]: unknown tool \"scenario_delete\"",
            ]
        );
    }

    #[test]
    fn mtls_needs_a_client_ca_and_cannot_terminate_upstream() {
        let found = problems(
            "[server]\ntls_termination = \"upstream\"\n[server.auth]\nmode = \"mtls\"\n[[server.auth.clients]]\nsubject = \"agent\"\n",
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("server.tls.client_ca_path")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("server.tls_termination")),
            "{found:?}"
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let loaded = parse(
            "data_dir = \"data\"\n[server.audit]\npath = \"audit.jsonl\"\n",
            Path::new("/etc/dg"),
        )
        .unwrap();
        assert_eq!(loaded.config.data_dir(), Path::new("/etc/dg/data"));
        assert_eq!(
            loaded.config.server.audit.path.as_deref(),
            Some(Path::new("/etc/dg/audit.jsonl"))
        );
    }
}
