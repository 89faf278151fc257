//! `bootstrap`, `keys …` and `rbac-matrix`: API keys administered as the database owner, for
//! the first owner of an organisation and for operators (the admin API does the same for
//! principals with the roles to).

use std::process::ExitCode;

use anyhow::anyhow;
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_enterprise::api_keys::{self, IssuedKey, Pepper};
use decision_gate_enterprise::config::EnterpriseConfig;
use decision_gate_enterprise::rbac::matrix_markdown;
use decision_gate_store_enterprise::{
    ApiKeyRecord, KeyScope, MAX_KEY_PAGE, PgPool, bootstrap_owner_key, list_api_keys,
    record_admin_event, revoke_api_key,
};
use serde_json::json;

use crate::{Output, OwnerUrl, UsageError, owner_url};

/// Who the command line acts as, in `created_by`.
const CLI_ACTOR: &str = "cli:owner";

/// What a key command was asked to do.
#[derive(clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a key; prints it once.
    Create {
        #[command(flatten)]
        url: OwnerUrl,
        /// The organisation it belongs to.
        #[arg(long)]
        organisation: i64,
        /// The only tenant it reaches (default: every tenant of the organisation).
        #[arg(long, value_parser = tenant_id)]
        tenant: Option<TenantId>,
        /// The only namespace of that tenant it reaches.
        #[arg(long, requires = "tenant", value_parser = namespace_id)]
        namespace: Option<NamespaceId>,
        /// A role (repeat for several): org_owner, tenant_admin, namespace_admin, operator,
        /// agent, auditor, viewer.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// A name for people.
        #[arg(long)]
        name: String,
        /// Seconds until it expires (default: never).
        #[arg(long)]
        expires_in_s: Option<i64>,
    },
    /// List an organisation's keys (never their secrets).
    List {
        #[command(flatten)]
        url: OwnerUrl,
        /// The organisation.
        #[arg(long)]
        organisation: i64,
        /// Only this tenant's keys.
        #[arg(long, value_parser = tenant_id)]
        tenant: Option<TenantId>,
        /// Start after this key id (the previous page's last).
        #[arg(long)]
        after: Option<String>,
        /// At most this many (1..=500).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Revoke a key: refused on every replica within a second.
    Revoke {
        #[command(flatten)]
        url: OwnerUrl,
        /// The key id (the 16 hex digits after `dg_`).
        key_id: String,
    },
    /// Replace a key by a new one; the old one keeps working for the overlap.
    Rotate {
        #[command(flatten)]
        url: OwnerUrl,
        /// The key id.
        key_id: String,
        /// Seconds the old key keeps working (default: `identity.rotation_overlap_s`).
        #[arg(long)]
        overlap_s: Option<i64>,
    },
}

fn tenant_id(text: &str) -> Result<TenantId, String> {
    let n: u64 = text.parse().map_err(|e| format!("{e}"))?;
    TenantId::new(n).map_err(|e| e.to_string())
}

fn namespace_id(text: &str) -> Result<NamespaceId, String> {
    let n: u64 = text.parse().map_err(|e| format!("{e}"))?;
    NamespaceId::new(n).map_err(|e| e.to_string())
}

/// The owner's pool and the configuration, which names the pepper.
async fn connect(url: OwnerUrl) -> anyhow::Result<(PgPool, EnterpriseConfig)> {
    let (url, config) = owner_url(url)?;
    let config = config.ok_or_else(|| {
        UsageError("needs --config (or $DECISION_GATE_ENTERPRISE_CONFIG): it names the API-key pepper file".into())
    })?;
    let pool = PgPool::connect(&url)
        .await
        .map_err(|e| anyhow!("connecting to the database: {e}"))?;
    Ok((pool, config))
}

/// The pepper of `config`, created when it does not exist yet.
fn pepper(config: &EnterpriseConfig) -> anyhow::Result<Pepper> {
    Pepper::load_or_create(&config.pepper_file()).map_err(|e| anyhow!("API-key pepper: {e}"))
}

/// Records a change made from the command line in the deployment audit stream, beside those
/// of the admin API. The change is made; a failure to record it is reported, not returned.
async fn audit(pool: &PgPool, action: &str, key: &ApiKeyRecord) {
    let scope = key.scope;
    let event = json!({
        "kind": "admin",
        "action": action,
        "principal": CLI_ACTOR,
        "auth_method": "database_owner",
        "organisation_id": scope.organisation_id,
        "tenant_id": scope.tenant_id,
        "namespace_id": scope.namespace_id,
        "resource": format!("api_key/{}", key.key_id),
        "outcome": { "kind": "success" },
    });
    if let Err(e) = record_admin_event(pool, scope.tenant_id, scope.namespace_id, &event).await {
        eprintln!(
            "decision-gate-enterprise: the change was made, but recording it in the audit trail failed: {e}"
        );
    }
}

fn record_text(k: &ApiKeyRecord) -> String {
    let scope = match (k.scope.tenant_id, k.scope.namespace_id) {
        (Some(t), Some(n)) => format!("namespace {t}/{n}"),
        (Some(t), None) => format!("tenant {t}"),
        _ => format!("organisation {}", k.scope.organisation_id),
    };
    let state = match (k.usable, k.revoked_at) {
        (true, _) => "usable",
        (false, Some(_)) => "revoked",
        (false, None) => "expired",
    };
    format!(
        "{}  {}  {}  {}  {state}",
        k.key_id,
        k.name,
        k.roles.join(","),
        scope
    )
}

fn print_issued(out: &Output, key: &IssuedKey, record: &ApiKeyRecord, note: &str) {
    out.print(
        &json!({"status": "ok", "key": key.token, "record": record}),
        &format!(
            "{}\n{note}\nkey (shown once, store it now): {}",
            record_text(record),
            key.token
        ),
    );
}

/// `bootstrap`: the organisation's first owner key.
pub(crate) async fn bootstrap(
    out: &Output,
    url: OwnerUrl,
    organisation: i64,
    name: String,
) -> anyhow::Result<ExitCode> {
    let (pool, config) = connect(url).await?;
    let pepper = pepper(&config)?;
    let scope = KeyScope {
        organisation_id: organisation,
        tenant_id: None,
        namespace_id: None,
    };
    let made = async {
        let (key, new) = api_keys::prepare(
            &pepper,
            scope,
            &["org_owner".to_owned()],
            "bootstrap owner",
            CLI_ACTOR,
            None,
        )?;
        let record = bootstrap_owner_key(&pool, &name, &new).await?;
        Ok::<_, decision_gate_store_enterprise::PgError>((key, record))
    }
    .await;
    if let Ok((_, record)) = &made {
        audit(&pool, "bootstrap", record).await;
    }
    pool.close().await;
    let (key, record) = made?;
    print_issued(
        out,
        &key,
        &record,
        &format!("organisation {organisation} has its owner key"),
    );
    Ok(ExitCode::SUCCESS)
}

/// `keys …`.
pub(crate) async fn keys(out: &Output, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Create {
            url,
            organisation,
            tenant,
            namespace,
            roles,
            name,
            expires_in_s,
        } => {
            let (pool, config) = connect(url).await?;
            let pepper = pepper(&config)?;
            let scope = KeyScope {
                organisation_id: organisation,
                tenant_id: tenant,
                namespace_id: namespace,
            };
            let made = api_keys::issue(
                &pool,
                &pepper,
                scope,
                &roles,
                &name,
                CLI_ACTOR,
                expires_in_s,
            )
            .await;
            if let Ok((_, record)) = &made {
                audit(&pool, "api_key_create", record).await;
            }
            pool.close().await;
            let (key, record) = made?;
            print_issued(out, &key, &record, "created");
        }
        KeysCommand::List {
            url,
            organisation,
            tenant,
            after,
            limit,
        } => {
            let (pool, _) = connect(url).await?;
            let listed = list_api_keys(&pool, organisation, tenant, after.as_deref(), limit).await;
            pool.close().await;
            let keys = listed?;
            let next = (keys.len() == limit as usize)
                .then(|| keys.last().map(|k| k.key_id.clone()))
                .flatten();
            let mut text: Vec<String> = keys.iter().map(record_text).collect();
            if let Some(next) = &next {
                text.push(format!("more: --after {next}"));
            }
            if text.is_empty() {
                text.push("no keys".to_owned());
            }
            out.print(
                &json!({"status": "ok", "keys": keys, "next_after": next, "max_limit": MAX_KEY_PAGE}),
                &text.join("\n"),
            );
        }
        KeysCommand::Revoke { url, key_id } => {
            let (pool, _) = connect(url).await?;
            let revoked = revoke_api_key(&pool, &key_id).await;
            if let Ok(Some(record)) = &revoked {
                audit(&pool, "api_key_revoke", record).await;
            }
            pool.close().await;
            let record = revoked?.ok_or_else(|| anyhow!("no API key {key_id}"))?;
            out.print(
                &json!({"status": "ok", "record": record}),
                &record_text(&record),
            );
        }
        KeysCommand::Rotate {
            url,
            key_id,
            overlap_s,
        } => {
            let (pool, config) = connect(url).await?;
            let pepper = pepper(&config)?;
            let overlap = overlap_s.unwrap_or(config.identity.rotation_overlap_s);
            let rotated = api_keys::rotate(&pool, &pepper, &key_id, CLI_ACTOR, overlap, None).await;
            if let Ok((_, _, created)) = &rotated {
                audit(&pool, "api_key_rotate", created).await;
            }
            pool.close().await;
            let (key, old, created) = rotated?;
            print_issued(
                out,
                &key,
                &created,
                &format!(
                    "replaces {} (usable until unix time {})",
                    old.key_id,
                    old.expires_at.unwrap_or_default()
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `rbac-matrix`: the permission matrix, as `Docs/security/rbac-matrix.md` holds it.
pub(crate) fn matrix() -> ExitCode {
    print!("{}", matrix_markdown());
    ExitCode::SUCCESS
}
