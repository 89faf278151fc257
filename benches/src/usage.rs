//! Area `usage`: what metering, quotas and rate limits cost on the enterprise server.
//!
//! - `ledger_events_per_s`: usage events recorded per second through the server's own
//!   `PgUsageMeter` on a scratch database, eight concurrent writers, batches of 100 events per
//!   record (a tenant on a plan with a quota on the counter, so each batch also consumes its
//!   quota); beside it the same with one event per record. Target: at least 10,000 events/s.
//! - `quota_overhead`: `scenario_next` calls/s over Streamable HTTP through the release
//!   `decision-gate-enterprise` binary on Postgres, eight clients of one tenant, with metering
//!   on and the tenant on a plan with quotas on its tool calls (per day and per month), against
//!   the same server and load with metering switched off (no ledger, no quota); the median
//!   relative loss over rounds whose order alternates. A per-tenant hot row would serialise
//!   the eight clients' transactions and fail it. Target: at most 15 %.
//! - `gcra_ns`: one local GCRA check (`LocalGcra`, the limiter `PlanRateLimit` keeps per rate,
//!   keyed by a credential's fixed-size key), in this process; beside it the whole decision of
//!   `PlanRateLimit::admit` (the tenant's plan from its warm cache, the credential's digest, the
//!   credential's and the tenant's checks). Target: under 200 ns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use decision_gate_core::access::{RateLimit, RequestContext, UsageEvent, UsageMeter, UsageMetric};
use decision_gate_core::{NamespaceId, TenantId};
use decision_gate_enterprise::plans::PlanCache;
use decision_gate_enterprise::rate_limit::{Key, LocalGcra, PlanRateLimit};
use decision_gate_mcp::metrics::Metrics;
use decision_gate_store_enterprise::{PgUsageMeter, PlanRates, PoolConfig, Rate};

use crate::mcp::{self, CONCURRENCY};
use crate::postgres::{self, Database, TOKEN};

/// Rounds of the throughput comparison; the VM's speed drifts by more than small effects.
const ROUNDS: usize = 7;
/// How long each ingest measurement runs.
const INGEST_FOR: Duration = Duration::from_secs(3);

/// The plan of the metered tenant: quotas on tool calls it never reaches.
const PLAN: &str = "features = [\"grpc\"]\n\
    [[quotas]]\nmetric = \"tool_calls\"\nperiod = \"day\"\nlimit = 1000000000000\n\
    [[quotas]]\nmetric = \"tool_calls\"\nperiod = \"month\"\nlimit = 1000000000000\n";

/// Puts tenant 1 of `db` on [`PLAN`].
fn put_plan(bin: &std::path::Path, db: &Database, dir: &std::path::Path) -> anyhow::Result<()> {
    let file = dir.join("plan.toml");
    std::fs::write(&file, PLAN).context("plan file")?;
    let config = db.config.to_str().context("path")?;
    let plan = file.to_str().context("path")?;
    postgres::enterprise(
        bin,
        &["plans", "put", "bench", "--config", config, "--file", plan],
    )?;
    postgres::enterprise(
        bin,
        &[
            "plans", "assign", "--config", config, "--tenant", "1", "--plan", "bench",
        ],
    )?;
    Ok(())
}

/// Events recorded per second by `writers` concurrent records of `batch` events each.
async fn ingest(meter: Arc<PgUsageMeter>, batch: usize, writers: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let meter = meter.clone();
            tokio::spawn(async move {
                let mut recorded = 0u64;
                let mut n = 0u64;
                while started.elapsed() < INGEST_FOR {
                    let events: Vec<UsageEvent> = (0..batch)
                        .map(|_| {
                            n += 1;
                            UsageEvent {
                                tenant_id: TenantId::DEFAULT,
                                namespace_id: NamespaceId::DEFAULT,
                                metric: UsageMetric::ToolCalls,
                                quantity: 1,
                                idempotency_key: format!("bench/{batch}/{w}/{n}"),
                            }
                        })
                        .collect();
                    meter.record(&events).await.context("record")?;
                    recorded += events.len() as u64;
                }
                anyhow::Ok(recorded)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.context("writer")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// One local GCRA check: the limiter `PlanRateLimit` keeps per rate in this process, for a
/// credential's key, at a rate it never refuses at (the checks run faster than any plan's rate,
/// so a rate with a one-nanosecond interval).
fn gcra_ns() -> anyhow::Result<f64> {
    let gcra = LocalGcra::new(Rate {
        per_second: 1_000_000_000,
        burst: 1_000_000_000,
    });
    let key = Key::Credential(TenantId::DEFAULT, [7; 16]);
    let mut refused = 0u64;
    let ns = crate::per_call_ns(|| {
        if gcra.check(std::hint::black_box(key)).is_some() {
            refused += 1;
        }
    });
    anyhow::ensure!(
        refused == 0,
        "{refused} checks refused at a rate never reached"
    );
    Ok(ns)
}

/// One whole decision of the plan rate limiter (the tenant's plan from its warm cache, the
/// credential's digest, the credential's and the tenant's checks), at rates it never refuses at.
async fn admit_ns(db: &Database) -> anyhow::Result<f64> {
    let pool = PoolConfig::default()
        .lazy_pool(&postgres::app_url(&db.name))
        .context("pool")?;
    let rate = Some(Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    });
    let limiter = PlanRateLimit::new(
        Arc::new(PlanCache::new(pool)),
        PlanRates {
            credential: rate,
            tenant: rate,
        },
        None,
        Metrics::new(),
        Arc::new(|_: Option<&str>| {}),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let mut ctx = RequestContext::local(TenantId::DEFAULT, NamespaceId::DEFAULT);
    ctx.principal.subject = "bench".into();
    ctx.principal.credential_id = Some("bench-key".into());
    limiter.admit(&ctx).await.context("a first admission")?;
    let refused = std::sync::atomic::AtomicU64::new(0);
    let ns = crate::authz::per_call_ns(|| {
        let (limiter, ctx, refused) = (&limiter, &ctx, &refused);
        async move {
            if limiter.admit(ctx).await.is_err() {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    })
    .await;
    let refused = refused.into_inner();
    anyhow::ensure!(
        refused == 0,
        "{refused} decisions refused at a rate never reached"
    );
    Ok(ns)
}

pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(std::env::var("DG_ENTERPRISE_BIN").context(
        "DG_ENTERPRISE_BIN: the release decision-gate-enterprise binary (scripts/bench.sh sets it)",
    )?);
    let dir = tempfile::tempdir().context("temp dir")?;
    let pid = std::process::id();
    postgres::ensure_app_role()?;
    let metered = Database::create(&bin, dir.path(), &format!("dg_bench_metered_{pid}"), "")?;
    let unmetered = Database::create(
        &bin,
        dir.path(),
        &format!("dg_bench_unmetered_{pid}"),
        "[usage]\nmetering = false\n",
    )?;
    put_plan(&bin, &metered, dir.path())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("runtime")?;
    let (batched, per_call, admit) = runtime.block_on(async {
        let pool = PoolConfig {
            max_connections: u32::try_from(CONCURRENCY).unwrap_or(8),
            ..PoolConfig::default()
        }
        .lazy_pool(&postgres::app_url(&metered.name))
        .context("pool")?;
        let meter = Arc::new(PgUsageMeter::new(pool));
        let batched = ingest(meter.clone(), 100, CONCURRENCY).await?;
        let per_call = ingest(meter, 1, CONCURRENCY).await?;
        let admit = admit_ns(&metered).await?;
        anyhow::Ok((batched, per_call, admit))
    })?;
    let gcra = gcra_ns()?;
    eprintln!(
        "ledger ingest, {CONCURRENCY} writers: {batched:.0} events/s in batches of 100, {per_call:.0} events/s one per record"
    );
    eprintln!(
        "a local GCRA check: {gcra:.0} ns; a whole rate-limit decision (plan, credential digest, credential and tenant checks): {admit:.0} ns"
    );

    let on = postgres::serve(&bin, &metered)?;
    let off = postgres::serve(&bin, &unmetered)?;
    let per_sec = |server: &mcp::Process| -> anyhow::Result<f64> {
        let url = format!("http://{}/mcp", server.addr);
        Ok(mcp::load_as(&url, "scenario_next", CONCURRENCY, None, Some(TOKEN))?.calls_per_sec)
    };
    let mut losses = Vec::new();
    for round in 1..=ROUNDS {
        let (a, b) = if round % 2 == 1 {
            let a = per_sec(&on)?;
            (a, per_sec(&off)?)
        } else {
            let b = per_sec(&off)?;
            (per_sec(&on)?, b)
        };
        eprintln!(
            "round {round}: scenario_next on Postgres: {a:.0}/s metered with quotas, {b:.0}/s unmetered"
        );
        losses.push((b - a) / b * 100.0);
    }
    let used = postgres::psql(
        &metered.name,
        "SELECT coalesce(sum(day_used), 0) FROM quota_shards WHERE metric = 'tool_calls'",
    )?;
    let shards = postgres::psql(
        &metered.name,
        "SELECT count(*) FROM quota_shards WHERE metric = 'tool_calls' AND day_used > 0",
    )?;
    eprintln!("the day's tool-call quota: {used} used, over {shards} shares in use");
    Ok(vec![
        ("ledger_events_per_s", batched, "events/s", ">=", 10_000.0),
        ("quota_overhead", crate::median(losses), "%", "<=", 15.0),
        ("gcra_ns", gcra, "ns", "<=", 200.0),
    ])
}
