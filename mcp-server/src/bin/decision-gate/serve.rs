//! `decision-gate serve`: the MCP server over stdio (the default) or Streamable HTTP at `/mcp`,
//! and the gRPC API beside or instead of HTTP.
//! Without a configuration file it is local-only, stores everything under the data directory
//! and offers the built-in `time` provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use decision_gate_mcp::config::{self, Config};
use decision_gate_mcp::server::cancel_on_signal;
use decision_gate_mcp::{DataDir, ServeError};
use tokio_util::sync::CancellationToken;

use crate::output::UsageError;

/// What `serve` was asked for.
pub(crate) struct ServeArgs {
    pub(crate) config: Option<PathBuf>,
    pub(crate) stdio: bool,
    pub(crate) http: Option<SocketAddr>,
    pub(crate) grpc: Option<SocketAddr>,
    pub(crate) data_dir: Option<PathBuf>,
}

pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let loaded = match crate::config::file(args.config) {
        None => Config::defaults(),
        Some(file) => match config::load(&file) {
            Ok(loaded) => loaded,
            Err(problems) => {
                for p in &problems {
                    eprintln!("{}: {p}", file.display());
                }
                return Err(UsageError(format!(
                    "{}: {} configuration problem(s); nothing was served",
                    file.display(),
                    problems.len()
                ))
                .into());
            }
        },
    };
    let data_dir = DataDir::new(args.data_dir.unwrap_or_else(|| loaded.config.data_dir()));
    let http = if args.stdio {
        None
    } else {
        args.http.or(loaded.config.server.bind)
    };
    let grpc = args.grpc;
    let result = async {
        let server = crate::compose::open(loaded, &data_dir).await?;
        if http.is_none() && grpc.is_none() {
            return server.serve_stdio().await;
        }
        let note = format!("data in {}", data_dir.path().display());
        let listeners = server.bind_listeners(http, grpc, &note).await?;
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        listeners.run(shutdown).await
    }
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A configuration that breaks a rule is a usage error (exit 2), like a bad flag.
        Err(e @ ServeError::Config(_)) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}
