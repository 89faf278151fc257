//! `decision-gate`: the command line of Decision Gate. Every command prints plain text, or one
//! JSON document with `--json`; exit code 0 means success, 1 a failed check (an invalid spec, a
//! runpack that does not verify), 2 a usage error.

mod compose;
mod config;
mod output;
mod quickstart;
mod runpack;
mod scenario;
mod serve;
mod setup;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// Request handling allocates many small, short-lived values across worker threads; mimalloc
// keeps that off glibc's arena locks (a measured difference under `scripts/bench.sh mcp`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "decision-gate",
    version,
    about = "Deterministic checkpoints for AI agents: decide, disclose, record, verify."
)]
struct Cli {
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the MCP tools: on stdin/stdout by default, or over Streamable HTTP at `/mcp`;
    /// and the gRPC API beside or instead of HTTP.
    Serve {
        /// Serve on stdin/stdout (the default unless `server.bind` or `--grpc` is given).
        #[arg(long, conflicts_with_all = ["http", "grpc"])]
        stdio: bool,
        /// Serve Streamable HTTP on this address (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        http: Option<SocketAddr>,
        /// Serve the gRPC API (`decision_gate.v1.DecisionGate`, health, reflection) on this
        /// address (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        grpc: Option<SocketAddr>,
        /// Where the database, runpacks and audit trail live (default: the configured
        /// `data_dir`, else `dg-data`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// The configuration file (default: `$DECISION_GATE_CONFIG`; none means local-only
        /// defaults).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the bundled example end to end on SQLite: define, start, trigger, export, verify.
    Quickstart {
        /// Where the database, evidence files and runpacks live.
        #[arg(long, default_value = "dg-data")]
        data_dir: PathBuf,
    },
    /// Scenario specs.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Runpacks.
    #[command(subcommand)]
    Runpack(RunpackCommand),
    /// The configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a configuration file: unknown keys, invalid values and provider settings.
    Check {
        /// The file (default: `$DECISION_GATE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Check a scenario spec file against every define-time rule and the built-in providers'
    /// contracts.
    Validate {
        /// The spec file (JSON).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum RunpackCommand {
    /// Export a run stored in a data directory as a runpack under `<data-dir>/runpacks`.
    Export {
        /// The data directory holding `decision-gate.db`.
        #[arg(long, default_value = "dg-data")]
        data_dir: PathBuf,
        /// The tenant.
        #[arg(long, default_value_t = 1)]
        tenant: u64,
        /// The namespace.
        #[arg(long, default_value_t = 1)]
        namespace: u64,
        /// The scenario.
        #[arg(long)]
        scenario: String,
        /// The run.
        #[arg(long)]
        run: String,
        /// The export time in Unix milliseconds (defaults to now; it is recorded, never decided on).
        #[arg(long)]
        generated_at: Option<i64>,
        /// A configuration file whose `[runpacks] signing_key_file` signs the export (defaults
        /// to `$DECISION_GATE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Verify a runpack directory offline: every file, hash and signature, and every recorded
    /// decision replayed through the engine.
    Verify {
        /// The runpack directory (holding `manifest.json`).
        dir: PathBuf,
        /// Skip the replay of every recorded trigger (the file, hash and signature checks
        /// still run).
        #[arg(long)]
        no_replay: bool,
        /// Replay every recorded trigger (the default; kept for scripts that pass it).
        #[arg(long, hide = true, conflicts_with = "no_replay")]
        replay: bool,
        /// Require a manifest signature by this ed25519 public key (hex); repeatable.
        #[arg(long = "trusted-key")]
        trusted_keys: Vec<String>,
        /// A configuration file whose `[runpacks]` keys are trusted too (defaults to
        /// `$DECISION_GATE_CONFIG`).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr: on stdio, stdout carries only JSON-RPC.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DECISION_GATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    // One TLS implementation for the whole process (the HTTP transport and the clients of
    // external providers): rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let out = output::Output::new(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return out.fatal(&anyhow::anyhow!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve {
                stdio,
                http,
                grpc,
                data_dir,
                config,
            } => {
                serve::run(serve::ServeArgs {
                    config,
                    stdio,
                    http,
                    grpc,
                    data_dir,
                })
                .await
            }
            Command::Quickstart { data_dir } => quickstart::run(&out, &data_dir).await,
            Command::Scenario(ScenarioCommand::Validate { file }) => {
                scenario::validate(&out, &file)
            }
            Command::Runpack(RunpackCommand::Export {
                data_dir,
                tenant,
                namespace,
                scenario,
                run,
                generated_at,
                config,
            }) => {
                runpack::export(
                    &out,
                    &data_dir,
                    (tenant, namespace),
                    (&scenario, &run),
                    generated_at,
                    config,
                )
                .await
            }
            Command::Runpack(RunpackCommand::Verify {
                dir,
                no_replay,
                replay: _,
                trusted_keys,
                config,
            }) => runpack::verify(&out, &dir, !no_replay, &trusted_keys, config),
            Command::Config(ConfigCommand::Check { config }) => config::check(&out, config),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => out.fatal(&e),
    }
}
