//! `decision-gate-enterprise`: the enterprise server and its administration. Every command
//! prints plain text, or one JSON document with `--json`; exit code 0 means success, 1 a failed
//! check or operation (findings, an unreachable or refused database), 2 a usage or
//! configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use decision_gate_enterprise::config::{self, CONFIG_ENV, EnterpriseConfig, redact};
use decision_gate_enterprise::{EnterpriseError, ServeOptions, provision, serve};
use decision_gate_store_enterprise::{
    MigrateOptions, MigrationInfo, PgPool, integrity_scan, migrate, tables_without_forced_rls,
};
use serde_json::json;

#[path = "cli/keys.rs"]
mod keys;
#[path = "cli/usage.rs"]
mod usage;

// The same allocator as the open-source binary (many small, short-lived values per request).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "decision-gate-enterprise",
    version,
    about = "Decision Gate on Postgres with tenant isolation: serve, migrate, provision, scan."
)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where the owner's database URL comes from.
#[derive(clap::Args)]
pub(crate) struct OwnerUrl {
    /// The owner's URL (default: `$DATABASE_URL`, else `database.owner_url` of `--config`).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The configuration file (default: `$DECISION_GATE_ENTERPRISE_CONFIG`).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the MCP tools over Streamable HTTP at `/mcp` (and the gRPC API) on Postgres.
    Serve {
        /// The configuration file (default: `$DECISION_GATE_ENTERPRISE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve Streamable HTTP on this address (default `server.bind`; port 0 picks one).
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Serve the gRPC API on this address (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        grpc: Option<SocketAddr>,
    },
    /// Apply the embedded migrations under the advisory lock, then grant the application role.
    Migrate {
        #[command(flatten)]
        url: OwnerUrl,
        /// The application role to grant (default: `database.app_role`, else the user of
        /// `database.url`; none without a configuration).
        #[arg(long)]
        app_role: Option<String>,
        /// Report what is pending and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create the organisations, tenants and namespaces of `[tenancy]` (idempotent).
    Provision {
        /// The configuration file (default: `$DECISION_GATE_ENTERPRISE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Report null tenant ids, cross-tenant references, orphaned rows, journal gaps and tenant
    /// tables without forced row-level security; exit 1 on any finding.
    IntegrityScan {
        #[command(flatten)]
        url: OwnerUrl,
    },
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create an organisation's first owner key (and the organisation, when it does not exist)
    /// and print it once; refuses when the organisation has a usable owner key. Creates the
    /// API-key pepper file when it does not exist.
    Bootstrap {
        #[command(flatten)]
        url: OwnerUrl,
        /// The organisation id (1..=2^63-1).
        #[arg(long)]
        organisation: i64,
        /// Its name, used when it is created.
        #[arg(long)]
        name: String,
    },
    /// API keys: create, list, revoke, rotate (as the database owner).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print the permission matrix (Docs/security/rbac-matrix.md) as Markdown.
    RbacMatrix,
    /// Plans: features, rate limits and quotas; put, list, delete, assign (as the database
    /// owner).
    #[command(subcommand)]
    Plans(usage::PlansCommand),
    /// A tenant's own quota limits (as the database owner).
    #[command(subcommand)]
    Quota(usage::QuotaCommand),
    /// The usage ledger: export a time window (as the database owner).
    #[command(subcommand)]
    Usage(usage::UsageCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: every problem, named by its key.
    Check {
        /// The file (default: `$DECISION_GATE_ENTERPRISE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// A usage or configuration error: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(String);

pub(crate) struct Output {
    json: bool,
}

impl Output {
    /// Prints `text` in text mode and `doc` in JSON mode.
    pub(crate) fn print(&self, doc: &serde_json::Value, text: &str) {
        if self.json {
            println!("{doc}");
        } else {
            println!("{text}");
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DECISION_GATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // One TLS implementation for the process: rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fatal(&out, &anyhow!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config, http, grpc } => {
                let config = load(config)?;
                serve(config, ServeOptions { http, grpc })
                    .await
                    .map_err(usage_if_config)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Migrate {
                url,
                app_role,
                dry_run,
            } => run_migrate(&out, url, app_role, dry_run).await,
            Command::Provision { config } => run_provision(&out, config).await,
            Command::IntegrityScan { url } => run_scan(&out, url).await,
            Command::Config(ConfigCommand::Check { config }) => check(&out, config),
            Command::Bootstrap {
                url,
                organisation,
                name,
            } => keys::bootstrap(&out, url, organisation, name).await,
            Command::Keys(command) => keys::keys(&out, command).await,
            Command::RbacMatrix => Ok(keys::matrix()),
            Command::Plans(command) => usage::plans(&out, command).await,
            Command::Quota(command) => usage::quota(&out, command).await,
            Command::Usage(command) => usage::usage(&out, command).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fatal(&out, &e),
    }
}

fn fatal(out: &Output, e: &anyhow::Error) -> ExitCode {
    let usage = e.downcast_ref::<UsageError>().is_some();
    if out.json {
        println!("{}", json!({"status": "error", "error": e.to_string()}));
    }
    eprintln!("decision-gate-enterprise: {e}");
    ExitCode::from(if usage { 2 } else { 1 })
}

fn usage_if_config(e: EnterpriseError) -> anyhow::Error {
    match e {
        EnterpriseError::Config(_) => UsageError(e.to_string()).into(),
        EnterpriseError::Serve(decision_gate_mcp::ServeError::Config(_)) => {
            UsageError(e.to_string()).into()
        }
        other => other.into(),
    }
}

fn config_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
}

/// The configuration file, which this command cannot do without.
fn required_config_file(flag: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    config_file(flag).ok_or_else(|| {
        UsageError(format!(
            "no configuration file: pass --config FILE or set {CONFIG_ENV}"
        ))
    })
}

/// Loads the configuration, listing every problem on stderr.
fn load(flag: Option<PathBuf>) -> anyhow::Result<EnterpriseConfig> {
    let file = required_config_file(flag)?;
    config::load(&file).map_err(|problems| {
        for p in &problems {
            eprintln!("{}: {p}", file.display());
        }
        UsageError(format!(
            "{}: {} configuration problem(s); nothing was done",
            file.display(),
            problems.len()
        ))
        .into()
    })
}

/// The owner URL: the flag, `$DATABASE_URL`, else the configuration's `owner_url`; with the
/// configuration when one was named.
pub(crate) fn owner_url(url: OwnerUrl) -> anyhow::Result<(String, Option<EnterpriseConfig>)> {
    let config = match config_file(url.config) {
        Some(file) => Some(load(Some(file))?),
        None => None,
    };
    let from_config = config.as_ref().and_then(|c| c.database.owner_url.clone());
    let found = url
        .database_url
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .or(from_config)
        .ok_or_else(|| {
            UsageError(
                "no database URL: pass --database-url URL, set DATABASE_URL, or name a --config with database.owner_url".into(),
            )
        })?;
    let mut problems = Vec::new();
    decision_gate_enterprise::config::url_problem("database URL", &found, &mut problems);
    if let Some(problem) = problems.first() {
        return Err(UsageError(problem.to_string()).into());
    }
    Ok((found, config))
}

fn names(list: &[MigrationInfo]) -> Vec<String> {
    list.iter()
        .map(|m| format!("{} {}", m.version, m.description))
        .collect()
}

async fn run_migrate(
    out: &Output,
    url: OwnerUrl,
    app_role: Option<String>,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    let (url, config) = owner_url(url)?;
    let app_role = app_role.or_else(|| config.as_ref().and_then(|c| c.database.app_role()));
    let report = migrate(
        &url,
        &MigrateOptions {
            dry_run,
            app_role: app_role.clone(),
        },
    )
    .await?;
    let mut text = vec![format!(
        "database {}{}",
        redact(&url),
        if dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        }
    )];
    for (label, list) in [
        ("already applied", &report.already_applied),
        ("applied now", &report.applied),
        ("pending", &report.pending),
    ] {
        let listed = names(list);
        text.push(format!(
            "{label}: {}",
            if listed.is_empty() {
                "none".to_owned()
            } else {
                listed.join(", ")
            }
        ));
    }
    if !dry_run {
        text.push(match &app_role {
            Some(role) => format!("application role {role} granted"),
            None => "no application role granted (pass --app-role)".to_owned(),
        });
    }
    out.print(
        &json!({"status": "ok", "report": report, "app_role": app_role}),
        &text.join("\n"),
    );
    Ok(ExitCode::SUCCESS)
}

async fn run_provision(out: &Output, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let config = load(config)?;
    let url = config.database.owner_url.clone().ok_or_else(|| {
        UsageError("provisioning runs as the owner: set database.owner_url".into())
    })?;
    let owner = PgPool::connect(&url)
        .await
        .map_err(|e| anyhow!("connecting to {}: {e}", redact(&url)))?;
    let report = provision(&owner, &config.tenancy).await;
    owner.close().await;
    let report = report?;
    out.print(
        &json!({"status": "ok", "report": report}),
        &format!(
            "created: {}\nexisting: {}",
            list_or_none(&report.created),
            list_or_none(&report.existing)
        ),
    );
    Ok(ExitCode::SUCCESS)
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

async fn run_scan(out: &Output, url: OwnerUrl) -> anyhow::Result<ExitCode> {
    let (url, _) = owner_url(url)?;
    let owner = PgPool::connect(&url)
        .await
        .map_err(|e| anyhow!("connecting to {}: {e}", redact(&url)))?;
    let scanned = async {
        let findings = integrity_scan(&owner).await?;
        let unforced = tables_without_forced_rls(&owner).await?;
        Ok::<_, decision_gate_store_enterprise::PgError>((findings, unforced))
    }
    .await;
    owner.close().await;
    let (findings, unforced) = scanned?;
    let clean = findings.is_empty() && unforced.is_empty();
    let mut text: Vec<String> = findings
        .iter()
        .map(|f| {
            format!(
                "{}: {} {}: {}",
                serde_json::to_value(f.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                f.table,
                f.key,
                f.detail
            )
        })
        .collect();
    for table in &unforced {
        text.push(format!(
            "rls_not_forced: {table}: row-level security is not enabled and forced"
        ));
    }
    text.push(if clean {
        "integrity scan: clean".to_owned()
    } else {
        format!(
            "integrity scan: {} finding(s)",
            findings.len() + unforced.len()
        )
    });
    out.print(
        &json!({
            "status": if clean { "clean" } else { "findings" },
            "findings": findings,
            "tables_without_forced_rls": unforced,
        }),
        &text.join("\n"),
    );
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The provider ids of a registry, for `config check`.
fn ids_of(registry: &decision_gate_core::ProviderRegistry) -> Vec<String> {
    registry
        .contracts()
        .map(|c| c.provider_id.to_string())
        .collect()
}

fn check(out: &Output, flag: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = required_config_file(flag)?;
    match config::load(&file) {
        Ok(config) => {
            let providers = ids_of(&config.server.providers);
            let tenant_providers: std::collections::BTreeMap<String, Vec<String>> = config
                .tenant_providers
                .iter()
                .map(|(tenant, registry)| (tenant.to_string(), ids_of(registry)))
                .collect();
            let per_tenant: String = tenant_providers
                .iter()
                .map(|(tenant, ids)| format!("; tenant {tenant}: {}", ids.join(", ")))
                .collect();
            let database = &config.database;
            out.print(
                &json!({
                    "file": file.display().to_string(),
                    "status": "ok",
                    "providers": providers,
                    "tenant_providers": tenant_providers,
                    "database": {
                        "url": redact(&database.url),
                        "owner_url": database.owner_url.as_deref().map(redact),
                        "app_role": database.app_role(),
                        "migrate_on_start": database.migrate_on_start,
                    },
                    "tenants": config.tenancy.tenants.len(),
                }),
                &format!(
                    "{}: ok (database {}; providers: {}{per_tenant}; {} tenant(s) to provision)",
                    file.display(),
                    redact(&database.url),
                    providers.join(", "),
                    config.tenancy.tenants.len()
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            let listed: Vec<_> = problems
                .iter()
                .map(|p| json!({"path": p.path, "message": p.message}))
                .collect();
            let text: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}: {}", file.display(), p.path, p.message))
                .collect();
            out.print(
                &json!({"file": file.display().to_string(), "status": "invalid", "errors": listed}),
                &text.join("\n"),
            );
            Ok(ExitCode::from(1))
        }
    }
}
