//! `decision-gate serve`: the MCP server over stdio (the default) or Streamable HTTP at `/mcp`,
//! and the gRPC API beside or instead of HTTP.
//! Without a configuration file it is local-only, stores everything under the data directory
//! and offers the built-in `time` provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use decision_gate_mcp::config::{self, Config};
use decision_gate_mcp::{DataDir, ServeError, Server};
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
        let server = Server::open(loaded, &data_dir).await?;
        if http.is_none() && grpc.is_none() {
            return server.serve_stdio().await;
        }
        let shutdown = CancellationToken::new();
        let http = match http {
            None => None,
            Some(addr) => {
                let bound = server.bind_http(addr).await?;
                let scheme = if bound.tls() { "https" } else { "http" };
                // Tests and scripts read this line to find the port when binding port 0.
                eprintln!(
                    "decision-gate: serving MCP on {scheme}://{}/mcp (data in {})",
                    bound.local_addr(),
                    data_dir.path().display()
                );
                Some(bound.run(shutdown.clone()))
            }
        };
        let grpc = match grpc {
            None => None,
            Some(addr) => {
                let bound = server.bind_grpc(addr).await?;
                let framing = if bound.tls() {
                    "TLS"
                } else {
                    "plaintext HTTP/2"
                };
                eprintln!(
                    "decision-gate: serving gRPC on {} ({framing}; data in {})",
                    bound.local_addr(),
                    data_dir.path().display()
                );
                Some(bound.run(shutdown.clone()))
            }
        };
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        let http = async {
            match http {
                Some(running) => running.await,
                None => Ok(()),
            }
        };
        let grpc = async {
            match grpc {
                Some(running) => running.await,
                None => Ok(()),
            }
        };
        // Either listener failing stops both.
        let stop = shutdown.clone();
        let (h, g) = tokio::join!(async { http.await.inspect_err(|_| stop.cancel()) }, async {
            grpc.await.inspect_err(|_| shutdown.cancel())
        },);
        h.and(g)
    }
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A configuration that breaks a rule is a usage error (exit 2), like a bad flag.
        Err(e @ ServeError::Config(_)) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM, so requests in progress finish before exit.
async fn cancel_on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    token.cancel();
}
