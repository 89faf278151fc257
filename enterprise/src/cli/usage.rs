//! `plans …`, `quota set` and `usage export`: plans, quota overrides and the usage ledger,
//! administered as the database owner (ADR 0016). Every change is recorded in the deployment
//! audit stream and announced to every replica, which applies it from its next call on.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use decision_gate_core::access::{QuotaPeriod, UsageMetric};
use decision_gate_core::ids::TenantId;
use decision_gate_store_enterprise::{
    ExportedEvent, Override, PgPool, Plan, assign_plan, delete_plan, export_usage, list_plans,
    put_plan, record_admin_event, set_override,
};
use serde_json::json;
use sha2::Digest as _;

use crate::{Output, OwnerUrl, UsageError, owner_url};

/// The largest plan file read.
const MAX_PLAN_FILE: u64 = 64 * 1024;
/// How long an export waits for transactions that began before its window's end.
const SETTLE_WAIT: Duration = Duration::from_secs(30);
/// The format of an export's manifest.
const EXPORT_FORMAT: &str = "decision-gate-usage-export/1";

/// What a plan command was asked to do.
#[derive(clap::Subcommand)]
pub(crate) enum PlansCommand {
    /// Create or replace a plan from a TOML or JSON file (by its extension).
    Put {
        #[command(flatten)]
        url: OwnerUrl,
        /// The plan id (a-z, 0-9, `_`, `-`; at most 63 bytes).
        plan: String,
        /// The plan: `features`, `rates`, `quotas` (Docs/usage.md).
        #[arg(long)]
        file: PathBuf,
    },
    /// List every plan.
    List {
        #[command(flatten)]
        url: OwnerUrl,
    },
    /// Delete a plan no tenant is on.
    Delete {
        #[command(flatten)]
        url: OwnerUrl,
        /// The plan id.
        plan: String,
    },
    /// Put a tenant on a plan (or, with `--none`, on no plan: no quotas, every feature).
    Assign {
        #[command(flatten)]
        url: OwnerUrl,
        /// The tenant.
        #[arg(long, value_parser = tenant_id)]
        tenant: TenantId,
        /// The plan.
        #[arg(long, required_unless_present = "none", conflicts_with = "none")]
        plan: Option<String>,
        /// No plan.
        #[arg(long)]
        none: bool,
    },
}

/// What a quota command was asked to do.
#[derive(clap::Subcommand)]
pub(crate) enum QuotaCommand {
    /// Override one of a tenant's quotas: `--limit N`, `--unlimited`, or `--clear` (the plan's
    /// limit again).
    Set {
        #[command(flatten)]
        url: OwnerUrl,
        /// The tenant.
        #[arg(long, value_parser = tenant_id)]
        tenant: TenantId,
        /// The counter.
        #[arg(long, value_parser = metric)]
        metric: UsageMetric,
        /// `day`, `month` or `total`.
        #[arg(long, value_parser = period)]
        period: QuotaPeriod,
        /// The limit.
        #[arg(long, group = "change")]
        limit: Option<u64>,
        /// No limit.
        #[arg(long, group = "change")]
        unlimited: bool,
        /// The plan's limit.
        #[arg(long, group = "change")]
        clear: bool,
    },
}

/// What a usage command was asked to do.
#[derive(clap::Subcommand)]
pub(crate) enum UsageCommand {
    /// Write the ledger's events of a time window to JSON lines, with a manifest beside them
    /// (`<out>.manifest.json`: count, BLAKE3 and SHA-256 of the file). The same window gives
    /// the same bytes.
    Export {
        #[command(flatten)]
        url: OwnerUrl,
        /// The window's start, included (RFC 3339, e.g. `2026-12-01T00:00:00Z`).
        #[arg(long)]
        from: String,
        /// The window's end, excluded; not in the future.
        #[arg(long)]
        to: String,
        /// Only this tenant's events.
        #[arg(long, value_parser = tenant_id)]
        tenant: Option<TenantId>,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

fn tenant_id(text: &str) -> Result<TenantId, String> {
    let n: u64 = text.parse().map_err(|e| format!("{e}"))?;
    TenantId::new(n).map_err(|e| e.to_string())
}

fn metric(text: &str) -> Result<UsageMetric, String> {
    UsageMetric::parse(text).ok_or_else(|| {
        let names: Vec<_> = UsageMetric::ALL.iter().map(|m| m.as_str()).collect();
        format!("one of {}", names.join(", "))
    })
}

fn period(text: &str) -> Result<QuotaPeriod, String> {
    QuotaPeriod::ALL
        .into_iter()
        .find(|p| p.as_str() == text)
        .ok_or_else(|| "one of day, month, total".to_owned())
}

async fn connect(url: OwnerUrl) -> anyhow::Result<PgPool> {
    let (url, _) = owner_url(url)?;
    PgPool::connect(&url)
        .await
        .map_err(|e| anyhow!("connecting to the database: {e}"))
}

/// Records a change made from the command line in the deployment audit stream. The change is
/// made; a failure to record it is reported, not returned.
async fn audit(pool: &PgPool, action: &str, tenant: Option<TenantId>, resource: &str) {
    let event = json!({
        "kind": "admin",
        "action": action,
        "principal": "cli:owner",
        "auth_method": "database_owner",
        "tenant_id": tenant,
        "resource": resource,
        "outcome": { "kind": "success" },
    });
    if let Err(e) = record_admin_event(pool, tenant, None, &event).await {
        eprintln!(
            "decision-gate-enterprise: the change was made, but recording it in the audit trail failed: {e}"
        );
    }
}

/// Reads a plan file: TOML when it ends in `.toml`, else JSON; unknown keys refused.
fn read_plan(file: &Path) -> anyhow::Result<Plan> {
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    if size > MAX_PLAN_FILE {
        return Err(UsageError(format!(
            "{}: {size} bytes, the largest plan file is {MAX_PLAN_FILE}",
            file.display()
        ))
        .into());
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let plan = if file.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| UsageError(format!("{}: {e}", file.display())))?
    } else {
        serde_json::from_str(&text).map_err(|e| UsageError(format!("{}: {e}", file.display())))?
    };
    Ok(plan)
}

/// `plans …`.
pub(crate) async fn plans(out: &Output, command: PlansCommand) -> anyhow::Result<ExitCode> {
    match command {
        PlansCommand::Put { url, plan, file } => {
            let document = read_plan(&file)?;
            let pool = connect(url).await?;
            put_plan(&pool, &plan, &document).await?;
            audit(&pool, "plan_put", None, &format!("plan/{plan}")).await;
            out.print(
                &json!({"status": "ok", "plan": plan, "document": document}),
                &format!("plan {plan} saved; tenants on it get it from their next call"),
            );
        }
        PlansCommand::List { url } => {
            let pool = connect(url).await?;
            let plans = list_plans(&pool).await?;
            let text = plans
                .iter()
                .map(|(id, p)| {
                    let features: Vec<_> = p.features.iter().map(|f| f.as_str()).collect();
                    format!(
                        "{id}  features: {}  quotas: {}",
                        features.join(","),
                        p.quotas.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n");
            out.print(&json!({"status": "ok", "plans": plans}), &text);
        }
        PlansCommand::Delete { url, plan } => {
            let pool = connect(url).await?;
            delete_plan(&pool, &plan).await?;
            audit(&pool, "plan_delete", None, &format!("plan/{plan}")).await;
            out.print(
                &json!({"status": "ok", "plan": plan}),
                &format!("plan {plan} deleted"),
            );
        }
        PlansCommand::Assign {
            url, tenant, plan, ..
        } => {
            let pool = connect(url).await?;
            assign_plan(&pool, tenant, plan.as_deref()).await?;
            audit(
                &pool,
                "plan_assign",
                Some(tenant),
                &format!("tenant/{tenant}/plan"),
            )
            .await;
            out.print(
                &json!({"status": "ok", "tenant_id": tenant, "plan": plan}),
                &format!(
                    "tenant {tenant} is on {} from its next call",
                    plan.as_deref()
                        .map_or("no plan".to_owned(), |p| format!("plan {p}"))
                ),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `quota set`.
pub(crate) async fn quota(out: &Output, command: QuotaCommand) -> anyhow::Result<ExitCode> {
    let QuotaCommand::Set {
        url,
        tenant,
        metric,
        period,
        limit,
        unlimited,
        clear,
    } = command;
    let change = match (limit, unlimited, clear) {
        (Some(l), false, false) => Override::Limit(l),
        (None, true, false) => Override::Unlimited,
        (None, false, true) => Override::Clear,
        _ => {
            return Err(UsageError("give one of --limit N, --unlimited or --clear".into()).into());
        }
    };
    let pool = connect(url).await?;
    set_override(&pool, tenant, metric, period, change).await?;
    let resource = format!(
        "tenant/{tenant}/quota/{}/{}",
        metric.as_str(),
        period.as_str()
    );
    audit(&pool, "quota_override", Some(tenant), &resource).await;
    out.print(
        &json!({"status": "ok", "tenant_id": tenant, "metric": metric, "period": period,
                "limit": limit, "unlimited": unlimited, "cleared": clear}),
        &format!("{resource}: {change:?}, from the next call"),
    );
    Ok(ExitCode::SUCCESS)
}

/// A time as unix milliseconds, parsed by the database (RFC 3339 and every form Postgres
/// reads), and the database's now.
async fn instants(pool: &PgPool, from: &str, to: &str) -> anyhow::Result<(i64, i64, i64)> {
    sqlx::query_as(
        "SELECT (extract(epoch FROM $1::timestamptz) * 1000)::bigint,
                (extract(epoch FROM $2::timestamptz) * 1000)::bigint,
                (extract(epoch FROM now()) * 1000)::bigint",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .map_err(|e| UsageError(format!("--from {from:?} / --to {to:?}: {e}")).into())
}

/// Waits until no transaction that began before `to_ms` is still open, so every event of the
/// window is committed (an event's time is its transaction's start).
async fn settle(pool: &PgPool, to_ms: i64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_WAIT;
    loop {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend'
                AND xact_start < 'epoch'::timestamptz + $1 * interval '1 millisecond'",
        )
        .bind(to_ms)
        .fetch_one(pool)
        .await?;
        if open == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(anyhow!(
                "{open} transaction(s) that began inside the window are still open after {}s; \
                 export an earlier window or retry",
                SETTLE_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `usage export`.
pub(crate) async fn usage(out: &Output, command: UsageCommand) -> anyhow::Result<ExitCode> {
    let UsageCommand::Export {
        url,
        from,
        to,
        tenant,
        out: file,
    } = command;
    let pool = connect(url).await?;
    let (from_ms, to_ms, now_ms) = instants(&pool, &from, &to).await?;
    if from_ms >= to_ms {
        return Err(UsageError(format!("--from {from:?} must be before --to {to:?}")).into());
    }
    if to_ms > now_ms {
        return Err(UsageError(format!(
            "--to {to:?} is in the future: a window still open can gain events"
        ))
        .into());
    }
    settle(&pool, to_ms).await?;
    let partial = file.with_extension("partial");
    let mut writer = std::io::BufWriter::new(
        std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut blake = blake3::Hasher::new();
    let mut sha = sha2::Sha256::new();
    let mut line = Vec::new();
    let count = export_usage(
        &pool,
        from_ms,
        to_ms,
        tenant,
        |batch: &[ExportedEvent]| {
            for event in batch {
                line.clear();
                serde_json::to_writer(&mut line, event).map_err(|e| e.to_string())?;
                line.push(b'\n');
                blake.update(&line);
                sha.update(&line);
                writer.write_all(&line).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
    .await?;
    writer
        .into_inner()
        .map_err(|e| anyhow!("writing {}: {e}", partial.display()))?
        .sync_all()?;
    std::fs::rename(&partial, &file).with_context(|| format!("writing {}", file.display()))?;
    let manifest = json!({
        "format": EXPORT_FORMAT,
        "file": file.file_name().map(|n| n.to_string_lossy().into_owned()),
        "from_ms": from_ms,
        "to_ms": to_ms,
        "tenant_id": tenant,
        "count": count,
        "blake3": blake.finalize().to_hex().to_string(),
        "sha256": hex::encode(sha.finalize()),
    });
    let manifest_file = PathBuf::from(format!("{}.manifest.json", file.display()));
    std::fs::write(&manifest_file, format!("{manifest:#}\n"))
        .with_context(|| format!("writing {}", manifest_file.display()))?;
    out.print(
        &json!({"status": "ok", "manifest": manifest, "manifest_file": manifest_file}),
        &format!(
            "{count} events written to {} (manifest {})",
            file.display(),
            manifest_file.display()
        ),
    );
    Ok(ExitCode::SUCCESS)
}
