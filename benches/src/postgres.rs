//! Area `postgres`: `scenario_next` through the release `decision-gate-enterprise` binary on
//! Postgres (the server at `DG_PG_URL`, which `scripts/bench.sh` gets from
//! `scripts/postgres.sh`), driven by the `mcp-load` client in another process.
//!
//! - `rls_overhead`: how much slower triggers/s are with row-level security forced (the real
//!   schema) than on a scratch copy with `DISABLE ROW LEVEL SECURITY` on every tenant table,
//!   in percent: the median of the rounds' overheads, each round measuring both servers back
//!   to back in alternating order. Target: at most 10.
//! - `trigger_vs_own_sql`: triggers/s (RLS on) divided by the rate of the trigger's own
//!   statements (`dg_run_and_trigger`, then `dg_append` with its journal entry, usage and audit
//!   event) replayed by pgbench as the application role, at the same concurrency, with
//!   prepared statements over plain TCP as the server connects: what the server adds over its
//!   database's share of the work. Target: at least 0.6.
//! - `trigger_flat`: the cost of a trigger on a run with 10,000 earlier triggers divided by
//!   its cost on a run with 10, one client, interleaved batches, medians. Target: at most 1.2.
//!
//! The enterprise server's whole trail is in Postgres (ADR 0011): the figures include it.

use anyhow::Context as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mcp::{self, CONCURRENCY, PHASE, ROUNDS, SCENARIO};

/// The bearer token the measured server is configured with (the enterprise server trusts no
/// caller for where it connects from), and its SHA-256 as the configuration holds it.
pub(crate) const TOKEN: &str = "bench-token-0123456789abcdef";
pub(crate) const TOKEN_SHA256: &str =
    "55aa0586ae8cf4fd70162ddfcda5246cacc189e6eb1effff3dad7d93a86571f1";

/// A PostgreSQL client program: from PATH, else the newest `/usr/lib/postgresql/*/bin`.
fn pg_bin(name: &str) -> anyhow::Result<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output();
    if let Ok(out) = on_path
        && out.status.success()
    {
        return Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.last()
        .map(|d| d.join(name))
        .filter(|p| p.exists())
        .with_context(|| format!("{name} not found: install PostgreSQL"))
}

/// `host:port` of `DG_PG_URL`.
fn pg_host() -> String {
    let url = std::env::var("DG_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let rest = url
        .split_once("://")
        .map_or(url.as_str(), |(_, r)| r)
        .to_owned();
    let hostpart = rest.rsplit_once('@').map_or(rest.as_str(), |(_, h)| h);
    hostpart
        .split(['/', '?'])
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned()
}

fn owner_url(db: &str) -> String {
    format!("postgres://postgres@{}/{db}", pg_host())
}

pub(crate) fn psql(db: &str, sql: &str) -> anyhow::Result<String> {
    let out = Command::new(pg_bin("psql")?)
        .args([
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &owner_url(db),
            "-c",
            sql,
        ])
        .output()
        .context("psql")?;
    anyhow::ensure!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs a command of the enterprise binary; its standard output.
pub(crate) fn enterprise(bin: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()
        .context("decision-gate-enterprise")?;
    anyhow::ensure!(
        out.status.success(),
        "decision-gate-enterprise {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A scratch database, migrated and provisioned (tenant 1, namespace 1), dropped on drop.
pub(crate) struct Database {
    pub(crate) name: String,
    pub(crate) config: PathBuf,
}

impl Database {
    /// The database `name` and its configuration under `dir`, with `extra` TOML appended.
    pub(crate) fn create(bin: &Path, dir: &Path, name: &str, extra: &str) -> anyhow::Result<Self> {
        psql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        )?;
        psql("postgres", &format!("CREATE DATABASE {name}"))?;
        let host = pg_host();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "data_dir = {data:?}\n[database]\nurl = \"postgres://dg_app:dg_app@{host}/{name}?sslmode=disable\"\nowner_url = \"postgres://postgres@{host}/{name}?sslmode=disable\"\nmax_connections = {conns}\n\
             [[tenancy.organisations]]\norganisation_id = 1\nname = \"bench\"\n\
             [[tenancy.tenants]]\ntenant_id = 1\norganisation_id = 1\nname = \"bench\"\nnamespaces = [{{ namespace_id = 1, name = \"bench\" }}]\n\
             [server.limits]\nmax_inflight = 4096\n\
             [server.auth]\nmode = \"bearer\"\n\
             [[server.auth.tokens]]\nsubject = \"bench\"\ntoken_sha256 = \"{TOKEN_SHA256}\"\ntenant_id = 1\n{extra}",
            data = dir.join(name).display().to_string(),
            conns = CONCURRENCY * 2,
        );
        std::fs::write(&config, text).context("write config")?;
        let file = config.to_str().context("path")?;
        enterprise(bin, &["migrate", "--config", file])?;
        enterprise(bin, &["provision", "--config", file])?;
        Ok(Self {
            name: name.to_owned(),
            config,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let Ok(psql) = pg_bin("psql") else {
            return;
        };
        let _ = Command::new(psql)
            .args([
                "-X",
                "-q",
                "-d",
                &owner_url("postgres"),
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// The enterprise server on `db`.
pub(crate) fn serve(bin: &Path, db: &Database) -> anyhow::Result<mcp::Process> {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--http", "127.0.0.1:0", "--config"])
        .arg(&db.config);
    mcp::spawn_server(cmd, false)
}

fn triggers_per_sec(server: &mcp::Process) -> anyhow::Result<f64> {
    let url = format!("http://{}/mcp", server.addr);
    let m = mcp::load_as(&url, "scenario_next", CONCURRENCY, None, Some(TOKEN))?;
    Ok(m.calls_per_sec)
}

/// A plain-TCP URL for pgbench: the measured server connects with `sslmode=disable`, so the
/// baseline does too (libpq would otherwise negotiate TLS and understate the machine's rate).
fn pgbench_url(user: &str, db: &str, options: &str) -> String {
    format!(
        "postgres://{user}@{}/{db}?sslmode=disable{options}",
        pg_host()
    )
}

/// Runs `script` with pgbench (prepared statements, as sqlx sends them) at the load client's
/// concurrency; returns (transactions/s, transactions processed).
fn pgbench(dir: &Path, url: &str, script: &str, defines: &[&str]) -> anyhow::Result<(f64, u64)> {
    let file = dir.join("pgbench.sql");
    std::fs::write(&file, script).context("script")?;
    let clients = CONCURRENCY.to_string();
    let out = Command::new(pg_bin("pgbench")?)
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients,
            "-j",
            &clients,
            "-T",
            &PHASE.as_secs().to_string(),
        ])
        .args(defines.iter().flat_map(|d| ["-D", d]))
        .arg("-f")
        .arg(&file)
        .arg(url)
        .output()
        .context("pgbench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success() && !text.contains("aborted"),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(prefix)
                .and_then(|r| r.split(' ').next())
                .map(str::to_owned)
        })
    };
    let tps = field("tps = ")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench output: {text}"))?;
    let done = field("number of transactions actually processed: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((tps, done))
}

/// A trigger's own SQL with no server in the way: pgbench sends, as the application role, the
/// two statements the server sends per trigger (`dg_run_and_trigger`, then `dg_append` with a
/// head, entry and audit event copied from the measured run), each worker on its own run: the
/// baseline of `trigger_vs_own_sql`.
fn trigger_sql_tps(dir: &Path, db: &str) -> anyhow::Result<f64> {
    // The body of an E'' literal: pgbench would read `:null` in the JSON as a variable.
    let quoted = |sql: &str| {
        psql(db, sql).map(|v| {
            v.replace('\\', "\\\\")
                .replace('\'', "''")
                .replace(':', "\\x3a")
        })
    };
    let head = quoted("SELECT head_json FROM runs ORDER BY revision DESC LIMIT 1")?;
    let entry =
        quoted("SELECT entry_json FROM run_entries ORDER BY length(entry_json) DESC LIMIT 1")?;
    let event = quoted("SELECT event_json FROM audit_events ORDER BY event_id DESC LIMIT 1")?;
    let sha = "0".repeat(64);
    psql(
        db,
        &format!(
            "INSERT INTO runs (tenant_id, namespace_id, run_id, scenario_id, revision, head_json, doc_sha256) \
             SELECT 1, 1, 'pgbench-' || g, 'cycle', 1, E'{head}', '{sha}' FROM generate_series(0, {}) g",
            CONCURRENCY - 1
        ),
    )?;
    // Each client carries its run's revision from one append's answer to the next (`\gset`),
    // as the server carries it from the head it read.
    let script = format!(
        "SELECT out_head_sha FROM dg_run_and_trigger(1, 1, 'pgbench-' || :client_id::text, 'none');\n\
         SELECT actual_revision AS rev FROM dg_append(1, 1, 'pgbench-' || :client_id::text, :rev::bigint, :rev::bigint + 1, E'{head}', '{sha}', \
         'pgbench-' || (:rev::bigint + 1), NULL, E'{entry}', '{sha}', \
         ARRAY[1::bigint], ARRAY['pgbench/' || :client_id::text || '/' || (:rev::bigint + 1)], ARRAY[1::bigint], ARRAY['tool_calls'], ARRAY[1::bigint], \
         ARRAY[1::bigint], ARRAY[1::bigint], ARRAY[E'{event}'], ARRAY['{sha}']) \\gset\n"
    );
    let (tps, done) = pgbench(
        dir,
        &pgbench_url("dg_app:dg_app", db, "&options=-c%20app.tenant_id%3D1"),
        &script,
        &["rev=1"],
    )?;
    // Every transaction must have appended, or the figure measured something else.
    let appended: u64 = psql(
        db,
        "SELECT count(*) FROM run_entries WHERE run_id LIKE 'pgbench-%'",
    )?
    .parse()
    .context("count")?;
    anyhow::ensure!(
        done > 0 && appended == done,
        "pgbench appended {appended} entries in {done} transactions"
    );
    Ok(tps)
}

/// One `tools/call`, checked like the load client checks its calls.
async fn post(
    client: &reqwest::Client,
    url: &str,
    tool: &str,
    arguments: Value,
) -> anyhow::Result<()> {
    mcp::post(
        client,
        url,
        mcp::call_body(1, tool, arguments)?,
        Some(TOKEN),
    )
    .await
    .context(tool.to_owned())
}

/// Per-trigger cost on a run with 10,000 earlier triggers over one with 10.
async fn trigger_flat(server: &mcp::Process) -> anyhow::Result<f64> {
    let url = format!("http://{}/mcp", server.addr);
    let client = reqwest::Client::new();
    let spec: Value = serde_json::from_str(SCENARIO).context("scenario")?;
    post(&client, &url, "scenario_define", json!({"spec": spec})).await?;
    let runs = ["flat-short", "flat-long"];
    for run in runs {
        post(&client, &url, "scenario_start", json!({"scenario_id": "cycle", "started_at": {"kind": "logical", "value": 0}, "run_config": {"tenant_id": 1, "namespace_id": 1, "run_id": run}})).await?;
    }
    let mut sent = [0u64; 2];
    let next = |run: usize, n: u64| json!({"scenario_id": "cycle", "request": {"run_id": runs[run], "tenant_id": 1, "namespace_id": 1, "trigger_id": format!("t{n}"), "agent_id": "bench", "time": {"kind": "logical", "value": n}}});
    for (run, earlier) in [(0, 10), (1, 10_000)] {
        for _ in 0..earlier {
            sent[run] += 1;
            post(&client, &url, "scenario_next", next(run, sent[run])).await?;
        }
    }
    let mut per_run: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..15 {
        for run in [0, 1] {
            let started = Instant::now();
            for _ in 0..10 {
                sent[run] += 1;
                post(&client, &url, "scenario_next", next(run, sent[run])).await?;
            }
            per_run[run].push(started.elapsed().as_nanos() as f64 / 10.0);
        }
    }
    let [short, long] = per_run;
    let (short, long) = (crate::median(short), crate::median(long));
    eprintln!(
        "per trigger, one client: {:.0} µs at 10 earlier triggers, {:.0} µs at 10,000",
        short / 1000.0,
        long / 1000.0
    );
    Ok(long / short)
}

/// The application role the measured servers connect as.
pub(crate) fn ensure_app_role() -> anyhow::Result<()> {
    psql(
        "postgres",
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dg_app') THEN \
         CREATE ROLE dg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD 'dg_app'; END IF; END $$",
    )
    .map(drop)
}

/// The application role's URL of database `db`.
pub(crate) fn app_url(db: &str) -> String {
    format!(
        "postgres://dg_app:dg_app@{}/{db}?sslmode=disable",
        pg_host()
    )
}

/// Orchestrates the area: returns (name, measured, unit, op, target) per target.
pub fn run() -> anyhow::Result<Vec<crate::Line>> {
    let bin = PathBuf::from(std::env::var("DG_ENTERPRISE_BIN").context(
        "DG_ENTERPRISE_BIN: the release decision-gate-enterprise binary (scripts/bench.sh sets it)",
    )?);
    let dir = tempfile::tempdir().context("temp dir")?;
    let pid = std::process::id();
    ensure_app_role()?;
    let rls_db = Database::create(&bin, dir.path(), &format!("dg_bench_rls_{pid}"), "")?;
    let plain_db = Database::create(&bin, dir.path(), &format!("dg_bench_norls_{pid}"), "")?;
    // The scratch copy: row-level security off on every tenant table (dropping the policies
    // while FORCE stays would deny everything instead).
    let tables = psql(
        &plain_db.name,
        "SELECT string_agg(c.relname, ',') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relrowsecurity",
    )?;
    for table in tables.split(',').filter(|t| !t.is_empty()) {
        psql(
            &plain_db.name,
            &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
        )?;
    }
    let rls = serve(&bin, &rls_db)?;
    let plain = serve(&bin, &plain_db)?;

    // Each round pairs the two servers back to back, in alternating order so that a machine
    // warming up or slowing down favours neither; the overhead is the median of the rounds'.
    let (mut with_rls, mut overheads) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        let (a, b) = if round % 2 == 1 {
            let a = triggers_per_sec(&rls)?;
            (a, triggers_per_sec(&plain)?)
        } else {
            let b = triggers_per_sec(&plain)?;
            (triggers_per_sec(&rls)?, b)
        };
        eprintln!(
            "round {round}: scenario_next on Postgres: {a:.0}/s with RLS forced, {b:.0}/s with RLS disabled"
        );
        with_rls.push(a);
        overheads.push((b - a) / b * 100.0);
    }
    let own_sql = trigger_sql_tps(dir.path(), &rls_db.name)?;
    eprintln!(
        "a trigger's own statements replayed by pgbench (no server), {CONCURRENCY} clients: {own_sql:.0} tps"
    );
    let with_rls = crate::median(with_rls);
    drop(plain);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let started = Instant::now();
    let flat = runtime.block_on(trigger_flat(&rls))?;
    eprintln!(
        "trigger_flat took {:?}",
        started.elapsed().max(Duration::ZERO)
    );
    Ok(vec![
        ("rls_overhead", crate::median(overheads), "%", "<=", 10.0),
        ("trigger_vs_own_sql", with_rls / own_sql, "x", ">=", 0.6),
        ("trigger_flat", flat, "x", "<=", 1.2),
    ])
}
