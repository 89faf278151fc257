//! The enterprise configuration file: every section of the open-source `decision-gate.toml`
//! (server, auth, limits, audit, engine, providers, evidence, feedback; checked by the same
//! code) plus `[database]` and `[tenancy]`. Unknown keys are refused with their path and every
//! problem is listed before anything is served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::time::Duration;

use decision_gate_core::ProviderRegistry;
use decision_gate_core::engine::from_json_value;
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_mcp::config::{self as oss, AuthConfig, Loaded, Problem};
use decision_gate_store_enterprise::PoolConfig;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::oidc::IssuerConfig;

/// The environment variable naming the enterprise configuration file.
pub const CONFIG_ENV: &str = "DECISION_GATE_ENTERPRISE_CONFIG";

/// Upper bounds of the pool settings: far above any sane value, low enough to catch a unit
/// mistake (seconds typed as milliseconds the other way round).
const MAX_CONNECTIONS: u32 = 1_000;
const MAX_TIMEOUT_MS: u64 = 3_600_000;
const MAX_NAME_BYTES: usize = 256;

/// `[database]`: where the state lives and how the server connects.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// The application role's URL (`postgres://dg_app:…@host/db`): the server serves through
    /// it. It must not be a superuser, BYPASSRLS or the tables' owner.
    pub url: String,
    /// The owner's URL (the migration role or a superuser), for `migrate`, `provision`,
    /// `integrity-scan` and `migrate_on_start`; the server never serves through it.
    #[serde(default)]
    pub owner_url: Option<String>,
    /// The application role `migrate` grants privileges to; default: the user in `url`.
    #[serde(default)]
    pub app_role: Option<String>,
    /// Apply pending migrations and `[tenancy]` at start-up (needs `owner_url`). Off by
    /// default: an operator migrates once, before rolling out replicas.
    #[serde(default)]
    pub migrate_on_start: bool,
    /// The most connections the pool opens (1..=1000).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing `unavailable`.
    #[serde(default = "default_acquire_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// The server-side limit on one statement (`statement_timeout`).
    #[serde(default = "default_statement_timeout_ms")]
    pub statement_timeout_ms: u64,
    /// How long an idle connection is kept.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_max_connections() -> u32 {
    16
}
fn default_acquire_timeout_ms() -> u64 {
    5_000
}
fn default_statement_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    600_000
}

impl DatabaseConfig {
    /// The pool settings.
    #[must_use]
    pub fn pool(&self) -> PoolConfig {
        PoolConfig {
            max_connections: self.max_connections,
            acquire_timeout: Duration::from_millis(self.acquire_timeout_ms),
            statement_timeout: Some(Duration::from_millis(self.statement_timeout_ms)),
            idle_timeout: Some(Duration::from_millis(self.idle_timeout_ms)),
        }
    }

    /// The role `migrate` grants: `app_role`, else the user named in `url`.
    #[must_use]
    pub fn app_role(&self) -> Option<String> {
        self.app_role.clone().or_else(|| {
            PgConnectOptions::from_str(&self.url)
                .ok()
                .map(|o| o.get_username().to_owned())
        })
    }

    fn problems(&self, problems: &mut Vec<Problem>) {
        url_problem("database.url", &self.url, problems);
        if let Some(owner) = &self.owner_url {
            url_problem("database.owner_url", owner, problems);
        }
        if self.migrate_on_start && self.owner_url.is_none() {
            problems.push(problem(
                "database.migrate_on_start",
                "needs database.owner_url (the application role cannot migrate)",
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.push(problem(
                "database.max_connections",
                format!(
                    "must be between 1 and {MAX_CONNECTIONS}, got {}",
                    self.max_connections
                ),
            ));
        }
        for (key, value) in [
            ("database.acquire_timeout_ms", self.acquire_timeout_ms),
            ("database.statement_timeout_ms", self.statement_timeout_ms),
            ("database.idle_timeout_ms", self.idle_timeout_ms),
        ] {
            if !(1..=MAX_TIMEOUT_MS).contains(&value) {
                problems.push(problem(
                    key,
                    format!("must be between 1 and {MAX_TIMEOUT_MS} milliseconds, got {value}"),
                ));
            }
        }
    }
}

/// Checks that `url` is a Postgres URL the driver accepts and that it cannot silently fall back
/// to plaintext: a database off this host needs an `sslmode` chosen on purpose (`verify-full`,
/// `verify-ca` or `require` for TLS, `disable` for a network the operator trusts), since the
/// default `prefer` (like `allow`) connects unencrypted whenever TLS fails, so a machine in the
/// middle could read the credentials and the data. The message never repeats the URL, which
/// may hold a password.
pub fn url_problem(key: &str, url: &str, problems: &mut Vec<Problem>) {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        problems.push(problem(key, "must be a postgres:// or postgresql:// URL"));
        return;
    }
    match PgConnectOptions::from_str(url) {
        Err(e) => problems.push(problem(key, format!("not a usable Postgres URL: {e}"))),
        Ok(options)
            if !is_local(options.get_host())
                && matches!(options.get_ssl_mode(), PgSslMode::Prefer | PgSslMode::Allow) =>
        {
            problems.push(problem(
                key,
                format!(
                    "reaches {} over the network with sslmode prefer or allow, which fall back to \
                     plaintext: add sslmode=verify-full (and sslrootcert=FILE), or sslmode=disable \
                     on a network you trust",
                    options.get_host()
                ),
            ));
        }
        Ok(_) => {}
    }
}

/// A Unix socket directory or a loopback host: the connection never leaves this machine.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[tenancy]`: the organisations, tenants and namespaces `provision` (or `migrate_on_start`)
/// creates. Provisioning is idempotent; removing an entry here deletes nothing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenancyConfig {
    /// Organisations.
    pub organisations: Vec<OrganisationConfig>,
    /// Tenants, each in a listed organisation.
    pub tenants: Vec<TenantConfig>,
    /// Each tenant's evidence providers, by tenant id (`[tenancy.providers.<tenant_id>.json]`
    /// and so on, the sections of the open-source `[providers]`); a tenant without an entry
    /// reaches only `time`.
    pub providers: BTreeMap<String, oss::Providers>,
}

/// One organisation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganisationConfig {
    /// Its id (1..=i64::MAX).
    pub organisation_id: i64,
    /// Its name.
    pub name: String,
}

/// One tenant and its namespaces.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Its id.
    pub tenant_id: TenantId,
    /// The organisation it belongs to (listed in `tenancy.organisations`).
    pub organisation_id: i64,
    /// Its name.
    pub name: String,
    /// Its namespaces.
    #[serde(default)]
    pub namespaces: Vec<NamespaceConfig>,
}

/// One namespace of a tenant.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceConfig {
    /// Its id within the tenant.
    pub namespace_id: NamespaceId,
    /// Its name.
    pub name: String,
}

impl TenancyConfig {
    fn problems(&self, problems: &mut Vec<Problem>) {
        let mut orgs = Vec::new();
        for (i, org) in self.organisations.iter().enumerate() {
            let path = format!("tenancy.organisations[{i}]");
            if org.organisation_id <= 0 {
                problems.push(problem(
                    format!("{path}.organisation_id"),
                    format!("must be between 1 and {}", i64::MAX),
                ));
            }
            if orgs.contains(&org.organisation_id) {
                problems.push(problem(
                    format!("{path}.organisation_id"),
                    format!("organisation {} is listed twice", org.organisation_id),
                ));
            }
            orgs.push(org.organisation_id);
            name_problem(&format!("{path}.name"), &org.name, problems);
        }
        let mut tenants = Vec::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            let path = format!("tenancy.tenants[{i}]");
            if tenants.contains(&tenant.tenant_id) {
                problems.push(problem(
                    format!("{path}.tenant_id"),
                    format!("tenant {} is listed twice", tenant.tenant_id),
                ));
            }
            tenants.push(tenant.tenant_id);
            if !orgs.contains(&tenant.organisation_id) {
                problems.push(problem(
                    format!("{path}.organisation_id"),
                    format!(
                        "organisation {} is not listed in tenancy.organisations",
                        tenant.organisation_id
                    ),
                ));
            }
            name_problem(&format!("{path}.name"), &tenant.name, problems);
            let mut namespaces = Vec::new();
            for (j, ns) in tenant.namespaces.iter().enumerate() {
                let path = format!("{path}.namespaces[{j}]");
                if namespaces.contains(&ns.namespace_id) {
                    problems.push(problem(
                        format!("{path}.namespace_id"),
                        format!("namespace {} is listed twice", ns.namespace_id),
                    ));
                }
                namespaces.push(ns.namespace_id);
                name_problem(&format!("{path}.name"), &ns.name, problems);
            }
        }
    }
}

fn name_problem(key: &str, name: &str, problems: &mut Vec<Problem>) {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        problems.push(problem(
            key,
            format!("must be 1 to {MAX_NAME_BYTES} bytes without control characters"),
        ));
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

/// `[identity]`: API keys (and, with identity providers, the issuers the server trusts).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The file holding the API-key pepper (64 hex digits, mode 0600): the key of every stored
    /// key hash, the same file on every replica, never in the database. Default:
    /// `<data_dir>/api-key-pepper`; relative paths resolve against the configuration file's
    /// directory. `bootstrap` and `keys create` create it when it does not exist; `serve` only
    /// reads it (without it, every API key is refused).
    pub pepper_file: Option<PathBuf>,
    /// Seconds a rotated key keeps working beside its successor (0..=86400).
    pub rotation_overlap_s: i64,
    /// This server's resource identifier (an https URL, e.g. `https://dg.example.com/mcp`):
    /// the default audience of every issuer, and the `resource` of the OAuth protected-resource
    /// metadata (RFC 9728) that refusals point MCP clients to.
    pub resource: Option<String>,
    /// The OpenID providers whose access tokens the server accepts.
    pub issuers: Vec<IssuerConfig>,
    /// Administrative actions that need a step-up accept an authentication at most this many
    /// seconds old (1..=86400).
    pub step_up_max_age_s: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            pepper_file: None,
            rotation_overlap_s: 3_600,
            resource: None,
            issuers: Vec::new(),
            step_up_max_age_s: 300,
        }
    }
}

impl IdentityConfig {
    /// Fills each issuer's audience from `resource` when it has none.
    fn resolve(&mut self) {
        for issuer in &mut self.issuers {
            if issuer.audience.is_none() {
                issuer.audience.clone_from(&self.resource);
            }
        }
    }

    fn problems(&self, problems: &mut Vec<Problem>) {
        if let Some(resource) = &self.resource
            && let Some(p) = crate::oidc::url_problem(resource)
        {
            problems.push(problem("identity.resource", p));
        }
        if !(1..=86_400).contains(&self.step_up_max_age_s) {
            problems.push(problem(
                "identity.step_up_max_age_s",
                format!(
                    "must be between 1 and 86400 seconds, got {}",
                    self.step_up_max_age_s
                ),
            ));
        }
        if self.issuers.len() > crate::oidc::MAX_ISSUERS {
            problems.push(problem(
                "identity.issuers",
                format!(
                    "at most {} issuers, got {}",
                    crate::oidc::MAX_ISSUERS,
                    self.issuers.len()
                ),
            ));
        }
        let mut found = Vec::new();
        for (i, issuer) in self.issuers.iter().enumerate() {
            let path = format!("identity.issuers[{i}]");
            if found.contains(&&issuer.issuer) {
                problems.push(problem(
                    format!("{path}.issuer"),
                    format!("{} is listed twice", issuer.issuer),
                ));
            }
            found.push(&issuer.issuer);
            let mut named = Vec::new();
            issuer.problems(&path, &mut named);
            problems.extend(named.into_iter().map(|(p, m)| problem(p, m)));
        }
        let max = decision_gate_store_enterprise::MAX_OVERLAP_S;
        if !(0..=max).contains(&self.rotation_overlap_s) {
            problems.push(problem(
                "identity.rotation_overlap_s",
                format!(
                    "must be between 0 and {max} seconds, got {}",
                    self.rotation_overlap_s
                ),
            ));
        }
    }
}

/// `[usage]`: metering, the shared rate limiter and the rates of tenants whose plan sets none
/// (ADR 0016).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsageConfig {
    /// Whether this is a production deployment: metering cannot be switched off in one.
    pub production: bool,
    /// Whether calls are metered: usage in the ledger, quotas enforced. On by default; off only
    /// outside production (a test rig), where nothing is counted and no quota holds.
    pub metering: bool,
    /// Redis shared by every replica for rate limits (`redis://host:port[/db]`); without it
    /// each replica limits on its own.
    pub redis_url: Option<String>,
    /// How long a rate-limit decision waits for Redis before the replica decides alone
    /// (1..=1000 ms).
    pub redis_timeout_ms: u64,
    /// What every rate-limit key in Redis starts with: the same on every replica, different
    /// for deployments sharing one Redis (1 to 64 bytes of a-z, 0-9, `:`, `_` and `-`).
    pub redis_key_prefix: String,
    /// The rates of tenants whose plan sets none (and of tenants on no plan).
    pub rates: decision_gate_store_enterprise::PlanRates,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            production: false,
            metering: true,
            redis_url: None,
            redis_timeout_ms: 50,
            redis_key_prefix: "dg:rate".to_owned(),
            rates: decision_gate_store_enterprise::PlanRates::default(),
        }
    }
}

impl UsageConfig {
    fn problems(&self, problems: &mut Vec<Problem>) {
        if self.production && !self.metering {
            problems.push(problem(
                "usage.metering",
                "cannot be false in a production deployment (usage.production = true): every call is metered",
            ));
        }
        if !(1..=1_000).contains(&self.redis_timeout_ms) {
            problems.push(problem(
                "usage.redis_timeout_ms",
                format!(
                    "must be between 1 and 1000 ms, got {}",
                    self.redis_timeout_ms
                ),
            ));
        }
        let prefix_ok = (1..=64).contains(&self.redis_key_prefix.len())
            && self.redis_key_prefix.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b':' | b'_' | b'-')
            });
        if !prefix_ok {
            problems.push(problem(
                "usage.redis_key_prefix",
                "must be 1 to 64 bytes of a-z, 0-9, ':', '_' and '-'",
            ));
        }
        if let Some(url) = &self.redis_url
            && let Err(e) = redis::Client::open(url.as_str())
        {
            problems.push(problem("usage.redis_url", format!("not a Redis URL: {e}")));
        }
        let plan = decision_gate_store_enterprise::Plan {
            rates: self.rates,
            ..Default::default()
        };
        if let Err(e) = plan.check() {
            problems.push(problem("usage.rates", e.to_string()));
        }
    }
}

/// A checked enterprise configuration.
#[derive(Debug)]
pub struct EnterpriseConfig {
    /// The open-source sections, checked by the open-source rules, providers built.
    pub server: Loaded,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[tenancy]`.
    pub tenancy: TenancyConfig,
    /// `[identity]`, its paths resolved.
    pub identity: IdentityConfig,
    /// `[usage]`.
    pub usage: UsageConfig,
    /// Each configured tenant's providers, built from `tenancy.providers`.
    pub tenant_providers: BTreeMap<TenantId, ProviderRegistry>,
}

/// Providers are per tenant on a shared server: process-wide `[providers]` sections beyond
/// `time` would let every tenant read what they reach. Each tenant's sections are checked and
/// built like the open-source ones, named under their tenant.
fn tenant_providers(
    server: &Loaded,
    tenancy: &mut TenancyConfig,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> BTreeMap<TenantId, ProviderRegistry> {
    for name in server.config.providers.switched_on() {
        problems.push(problem(
            format!("providers.{name}"),
            format!(
                "providers are per tenant on the enterprise server: configure it under [tenancy.providers.<tenant_id>.{name}]"
            ),
        ));
    }
    let listed: Vec<TenantId> = tenancy.tenants.iter().map(|t| t.tenant_id).collect();
    let mut registries = BTreeMap::new();
    for (key, providers) in &mut tenancy.providers {
        let path = format!("tenancy.providers.{key}");
        let Some(tenant) = key.parse::<u64>().ok().and_then(|n| TenantId::new(n).ok()) else {
            problems.push(problem(path, "the key must be a tenant id"));
            continue;
        };
        if !listed.contains(&tenant) {
            problems.push(problem(
                path,
                format!("tenant {tenant} is not listed in tenancy.tenants"),
            ));
            continue;
        }
        providers.resolve_paths(base);
        let registry = providers.build(&path, server.config.engine.hash_algorithm, problems);
        registries.insert(tenant, registry);
    }
    registries
}

impl EnterpriseConfig {
    /// Where runpacks live: `data_dir`, else `dg-data`.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.server.config.data_dir()
    }

    /// The API-key pepper file: `identity.pepper_file`, else `<data_dir>/api-key-pepper`.
    #[must_use]
    pub fn pepper_file(&self) -> PathBuf {
        self.identity
            .pepper_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("api-key-pepper"))
    }
}

/// Reads and checks a configuration file.
///
/// # Errors
/// Every problem found, each naming its key.
pub fn load(file: &Path) -> Result<EnterpriseConfig, Vec<Problem>> {
    parse(&oss::read_file(file)?, &oss::base_dir(file))
}

/// Parses and checks configuration text; relative paths resolve against `base`.
///
/// # Errors
/// Every problem found, each naming its key: those of the enterprise sections and those of
/// the open-source ones together.
pub fn parse(text: &str, base: &Path) -> Result<EnterpriseConfig, Vec<Problem>> {
    let mut table = oss::read_table(text)?;
    let mut problems = Vec::new();
    if table.remove("store").is_some() {
        problems.push(problem(
            "store",
            "the enterprise server keeps scenarios, runs and schemas in Postgres ([database]); remove this key",
        ));
    }
    let database = match table.remove("database") {
        None => {
            problems.push(problem(
                "database",
                "missing: the enterprise server needs [database] with url",
            ));
            None
        }
        Some(value) => section::<DatabaseConfig>("database", value, &mut problems),
    };
    let mut tenancy = match table.remove("tenancy") {
        None => Some(TenancyConfig::default()),
        Some(value) => section::<TenancyConfig>("tenancy", value, &mut problems),
    };
    let identity = match table.remove("identity") {
        None => Some(IdentityConfig::default()),
        Some(value) => section::<IdentityConfig>("identity", value, &mut problems),
    }
    .map(|mut identity| {
        identity.resolve();
        identity.problems(&mut problems);
        identity.pepper_file = identity.pepper_file.map(|f| base.join(f));
        identity
    });
    let usage = match table.remove("usage") {
        None => Some(UsageConfig::default()),
        Some(value) => section::<UsageConfig>("usage", value, &mut problems),
    };
    if let Some(usage) = &usage {
        usage.problems(&mut problems);
    }
    if let Some(database) = &database {
        database.problems(&mut problems);
    }
    if let Some(tenancy) = &tenancy {
        tenancy.problems(&mut problems);
    }
    // Every caller authenticates (API keys, identity providers, the configured tokens and
    // certificates); `local_only` here means no configured credentials, never trust in
    // loopback callers.
    let server = oss::parse_table_with(table, base, true).map_err(|p| problems.extend(p));
    if let Ok(server) = &server {
        principal_problems(&server.config.server.auth, &mut problems);
        if server.config.server.audit.path.is_some() {
            problems.push(problem(
                "server.audit.path",
                "the enterprise server writes its audit trail to Postgres, never to a replica's disk; remove this key",
            ));
        }
    }
    let tenant_providers = match (&server, tenancy.as_mut()) {
        (Ok(server), Some(tenancy)) => tenant_providers(server, tenancy, base, &mut problems),
        _ => BTreeMap::new(),
    };
    match (server, database, tenancy, identity, usage) {
        (Ok(server), Some(database), Some(tenancy), Some(identity), Some(usage))
            if problems.is_empty() =>
        {
            Ok(EnterpriseConfig {
                server,
                database,
                tenancy,
                identity,
                usage,
                tenant_providers,
            })
        }
        _ => Err(problems),
    }
}

/// Fail closed on tenancy: every configured principal acts in exactly one tenant. A token or
/// client certificate without `tenant_id` would act for every tenant of the deployment.
fn principal_problems(auth: &AuthConfig, problems: &mut Vec<Problem>) {
    let tokens = auth
        .tokens
        .iter()
        .map(|t| &t.scope)
        .enumerate()
        .map(|(i, scope)| (format!("server.auth.tokens[{i}].tenant_id"), scope));
    let clients = auth
        .clients
        .iter()
        .map(|c| &c.scope)
        .enumerate()
        .map(|(i, scope)| (format!("server.auth.clients[{i}].tenant_id"), scope));
    for (path, scope) in tokens.chain(clients) {
        if scope.tenant_id.is_none() {
            problems.push(problem(
                path,
                "required by the enterprise server: every principal acts in one tenant",
            ));
        }
    }
}

/// Deserialises one section, its problems' paths prefixed with the section's name.
fn section<T: serde::de::DeserializeOwned>(
    name: &str,
    value: toml::Value,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let json = match serde_json::to_value(value) {
        Ok(json) => json,
        Err(e) => {
            problems.push(problem(name, e.to_string()));
            return None;
        }
    };
    match from_json_value::<T>(json) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = if e.path == "$" {
                name.to_owned()
            } else {
                format!("{name}.{}", e.path)
            };
            problems.push(problem(path, e.rule));
            None
        }
    }
}

/// A URL with its password replaced by `***`, for messages and `config check`.
#[must_use]
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "[database]\nurl = \"postgres://dg_app:secret@127.0.0.1/dg\"\n";

    fn problems(text: &str) -> Vec<String> {
        match parse(text, Path::new("/etc/dg")) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(ToString::to_string).collect(),
        }
    }

    const TENANTS: &str = "[[tenancy.organisations]]\norganisation_id = 1\nname = \"o\"\n\
        [[tenancy.tenants]]\ntenant_id = 1\norganisation_id = 1\nname = \"a\"\n\
        [[tenancy.tenants]]\ntenant_id = 2\norganisation_id = 1\nname = \"b\"\n";

    #[test]
    fn identity_limits_are_named_and_crossing_them_is_refused() {
        let issuer = |n: usize| {
            format!(
                "[[identity.issuers]]\nissuer = \"https://id{n}.example.com\"\norganisation_id = 1\n"
            )
        };
        let at_most: String = (0..crate::oidc::MAX_ISSUERS).map(issuer).collect();
        let head = "[identity]\nresource = \"https://dg.example.com/mcp\"\n";
        assert!(problems(&format!("{DB}{head}{at_most}")).is_empty());
        let over = format!("{at_most}{}", issuer(crate::oidc::MAX_ISSUERS));
        let found = problems(&format!("{DB}{head}{over}"));
        assert!(
            found
                .iter()
                .any(|p| p.contains("identity.issuers: at most 64")),
            "{found:?}"
        );
        let twice = format!("{}{}", issuer(1), issuer(1));
        let found = problems(&format!("{DB}{head}{twice}"));
        assert!(
            found.iter().any(|p| p.contains("listed twice")),
            "{found:?}"
        );
        for (key, value) in [
            ("rotation_overlap_s", "86401"),
            ("rotation_overlap_s", "-1"),
            ("step_up_max_age_s", "0"),
            ("step_up_max_age_s", "86401"),
            ("resource", "\"ftp://dg.example.com\""),
        ] {
            let found = problems(&format!("{DB}[identity]\n{key} = {value}\n"));
            assert!(
                found.iter().any(|p| p.contains(&format!("identity.{key}"))),
                "{key}: {found:?}"
            );
        }
        // An issuer with no audience and no identity.resource names the missing key.
        let found = problems(&format!("{DB}{}", issuer(0)));
        assert!(
            found
                .iter()
                .any(|p| p.contains("identity.issuers[0].audience")),
            "{found:?}"
        );
    }

    #[test]
    fn metering_cannot_be_switched_off_in_production_and_usage_limits_are_named() {
        assert!(problems(&format!("{DB}[usage]\nmetering = false\n")).is_empty());
        let found = problems(&format!(
            "{DB}[usage]\nproduction = true\nmetering = false\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.contains("usage.metering") && p.contains("production")),
            "{found:?}"
        );
        for (key, value, named) in [
            ("redis_timeout_ms", "0", "usage.redis_timeout_ms"),
            ("redis_timeout_ms", "1001", "usage.redis_timeout_ms"),
            ("redis_url", "\"http://cache\"", "usage.redis_url"),
            ("redis_key_prefix", "\"\"", "usage.redis_key_prefix"),
            ("redis_key_prefix", "\"Dg Rate\"", "usage.redis_key_prefix"),
            (
                "rates",
                "{ credential = { per_second = 0, burst = 5 } }",
                "rates.credential",
            ),
            (
                "rates",
                "{ tenant = { per_second = 5, burst = 1000001 } }",
                "rates.tenant",
            ),
        ] {
            let found = problems(&format!("{DB}[usage]\n{key} = {value}\n"));
            assert!(
                found.iter().any(|p| p.contains(named)),
                "{key} = {value}: {found:?}"
            );
        }
        assert!(
            problems(&format!(
                "{DB}[usage]\nproduction = true\nredis_url = \"redis://127.0.0.1:6379\"\n\
                 rates = {{ credential = {{ per_second = 10, burst = 20 }} }}\n"
            ))
            .is_empty()
        );
    }

    #[test]
    fn providers_are_per_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("{DB}{TENANTS}[tenancy.providers.1.env]\nallowlist = [\"HOME\"]\n");
        let config = parse(&text, dir.path()).expect("valid");
        let tenant = |n| TenantId::new(n).unwrap();
        assert_eq!(config.tenant_providers.len(), 1);
        let own = &config.tenant_providers[&tenant(1)];
        assert!(own.get(&"env".parse().unwrap()).is_some());
        assert!(own.get(&"time".parse().unwrap()).is_some());
        assert!(!config.tenant_providers.contains_key(&tenant(2)));

        let found = problems(&format!(
            "{DB}{TENANTS}[providers.env]\nallowlist = [\"HOME\"]\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("providers.env: providers are per tenant")),
            "{found:?}"
        );
        let found = problems(&format!(
            "{DB}{TENANTS}[tenancy.providers.3.env]\n[tenancy.providers.x.env]\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p == "tenancy.providers.3: tenant 3 is not listed in tenancy.tenants"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p == "tenancy.providers.x: the key must be a tenant id"),
            "{found:?}"
        );
        let found = problems(&format!(
            "{DB}{TENANTS}[tenancy.providers.1.json]\nroot = \"missing\"\nroot_id = \"r\"\n"
        ));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("tenancy.providers.1.json: ")),
            "{found:?}"
        );
    }

    #[test]
    fn every_principal_needs_a_tenant() {
        let digest = "0".repeat(64);
        let text = format!(
            "{DB}[server.auth]\nmode = \"bearer\"\n\
             [[server.auth.tokens]]\nsubject = \"scoped\"\ntoken_sha256 = \"{digest}\"\ntenant_id = 1\n\
             [[server.auth.tokens]]\nsubject = \"everywhere\"\ntoken_sha256 = \"{}\"\n",
            "1".repeat(64)
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("server.auth.tokens[1].tenant_id"),
            "{found:?}"
        );
        let scoped = text.replace(
            "subject = \"everywhere\"",
            "subject = \"everywhere\"\ntenant_id = 2",
        );
        assert!(parse(&scoped, Path::new(".")).is_ok());
    }

    #[test]
    fn a_remote_database_needs_an_sslmode_chosen_on_purpose() {
        let with = |url: &str| problems(&DB.replace("127.0.0.1/dg", url));
        for url in [
            "db.example.com:5432/dg",
            "db.example.com/dg?sslmode=prefer",
            "10.0.0.7/dg?sslmode=allow",
        ] {
            let found = with(url);
            assert_eq!(found.len(), 1, "{url}: {found:?}");
            assert!(found[0].starts_with("database.url: reaches "), "{found:?}");
            assert!(found[0].contains("sslmode=verify-full"), "{found:?}");
            assert!(
                !found[0].contains("secret"),
                "the password is never repeated: {found:?}"
            );
        }
        for url in [
            "db.example.com/dg?sslmode=verify-full",
            "db.example.com/dg?sslmode=require",
            "db.example.com/dg?sslmode=disable",
            "localhost/dg",
            "[::1]:5432/dg",
            "127.0.0.2/dg",
        ] {
            assert_eq!(with(url), Vec::<String>::new(), "{url}");
        }
    }

    #[test]
    fn a_database_url_is_enough() {
        let config = parse(DB, Path::new(".")).unwrap();
        assert_eq!(config.database.max_connections, 16);
        assert_eq!(config.database.app_role().as_deref(), Some("dg_app"));
        assert!(!config.database.migrate_on_start);
    }

    #[test]
    fn the_database_section_is_required_and_store_is_refused() {
        let found = problems("store = \"memory\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("store: "), "{found:?}");
        assert!(found[1].starts_with("database: missing"), "{found:?}");
    }

    #[test]
    fn an_audit_file_is_refused_the_trail_is_in_postgres() {
        let found = problems(&format!("{DB}[server.audit]\npath = \"audit.jsonl\"\n"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("server.audit.path: "), "{found:?}");
        assert!(found[0].contains("Postgres"), "{found:?}");
    }

    #[test]
    fn unknown_keys_are_named_in_every_section_at_once() {
        let found = problems(&format!(
            "{DB}max_conections = 3\n[server.limits]\nmax_infligt = 5\n"
        ));
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("max_conections"), "{found:?}");
        assert!(found[0].starts_with("database"), "{found:?}");
        assert!(found[1].contains("max_infligt"), "{found:?}");
    }

    #[test]
    fn pool_limits_name_the_field_and_the_limit() {
        let found = problems(&format!(
            "{DB}max_connections = 0\nacquire_timeout_ms = 0\nmigrate_on_start = true\n"
        ));
        assert_eq!(
            found,
            [
                "database.migrate_on_start: needs database.owner_url (the application role cannot migrate)",
                "database.max_connections: must be between 1 and 1000, got 0",
                "database.acquire_timeout_ms: must be between 1 and 3600000 milliseconds, got 0",
            ]
        );
        let found = problems("[database]\nurl = \"mysql://x@y/z\"\n");
        assert_eq!(
            found,
            ["database.url: must be a postgres:// or postgresql:// URL"]
        );
    }

    #[test]
    fn tenants_need_a_listed_organisation_and_unique_ids() {
        let found = problems(&format!(
            "{DB}[[tenancy.organisations]]\norganisation_id = 1\nname = \"acme\"\n\
             [[tenancy.tenants]]\ntenant_id = 1\norganisation_id = 2\nname = \"a\"\n\
             namespaces = [{{ namespace_id = 1, name = \"x\" }}, {{ namespace_id = 1, name = \"y\" }}]\n"
        ));
        assert_eq!(
            found,
            [
                "tenancy.tenants[0].organisation_id: organisation 2 is not listed in tenancy.organisations",
                "tenancy.tenants[0].namespaces[1].namespace_id: namespace 1 is listed twice",
            ]
        );
        let found = problems(&format!(
            "{DB}[[tenancy.tenants]]\ntenant_id = 0\norganisation_id = 1\nname = \"a\"\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("tenancy.tenants[0].tenant_id"),
            "{found:?}"
        );
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../../examples/enterprise.toml");
        let config = parse(text, Path::new("/srv/dg")).unwrap();
        assert_eq!(config.tenancy.tenants.len(), 2);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://dg_app:secret@127.0.0.1/dg"),
            "postgres://dg_app:***@127.0.0.1/dg"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/dg"),
            "postgres://postgres@127.0.0.1/dg"
        );
    }
}
