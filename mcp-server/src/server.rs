//! The composition root of the open-source server: a checked configuration becomes a service
//! on SQLite and the filesystem, served over stdio or Streamable HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use decision_gate_core::access::{AuditSink, JsonLinesAuditSink};
use decision_gate_core::runpack::{FsRunpackStore, MemoryRunpackStore};
use decision_gate_core::service::DecisionGateBuilder;
use decision_gate_core::{DecisionGate, MemoryStore, SqliteStore};
use rmcp::ServiceExt as _;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::caller::Transport;
use crate::config::{Config, Loaded, Problem, StoreKind};
use crate::grpc::{self, GrpcOptions};
use crate::handler::{McpHandler, Shared};
use crate::http::{self, HttpOptions};
use crate::metrics::Metrics;
use crate::tls::TlsSettings;
use crate::tools::ToolPolicy;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration breaks a rule; each problem names its key.
    #[error("invalid configuration: {}", crate::config::joined(.0))]
    Config(Vec<Problem>),
    /// The data directory or a store could not be opened.
    #[error("cannot open {what}: {message}")]
    Storage {
        /// What could not be opened.
        what: String,
        /// Why.
        message: String,
    },
    /// The listener or stdio failed.
    #[error("transport: {0}")]
    Transport(String),
}

fn storage(what: impl Into<String>) -> impl FnOnce(String) -> ServeError {
    let what = what.into();
    move |message| ServeError::Storage { what, message }
}

/// Where a data directory keeps things.
#[derive(Clone, Debug)]
pub struct DataDir(PathBuf);

impl DataDir {
    /// The directory.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The directory itself.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The SQLite database.
    #[must_use]
    pub fn database(&self) -> PathBuf {
        self.0.join("decision-gate.db")
    }

    /// Exported runpacks.
    #[must_use]
    pub fn runpacks(&self) -> PathBuf {
        self.0.join("runpacks")
    }

    /// The default audit trail.
    #[must_use]
    pub fn audit(&self) -> PathBuf {
        self.0.join("audit.jsonl")
    }
}

/// A configured server, its stores open, not yet serving.
pub struct Server {
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    config: Config,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the stores (under `data_dir`, created if missing, unless the configuration keeps
    /// them in memory) and builds the service. The audit trail is always a file.
    ///
    /// # Errors
    /// [`ServeError::Storage`] when the directory, database, runpack store or audit file
    /// cannot be opened.
    pub async fn open(loaded: Loaded, data_dir: &DataDir) -> Result<Self, ServeError> {
        std::fs::create_dir_all(data_dir.path())
            .map_err(|e| e.to_string())
            .map_err(storage(data_dir.path().display().to_string()))?;
        let builder = match loaded.config.store {
            StoreKind::Sqlite => {
                let store = SqliteStore::open(data_dir.database())
                    .await
                    .map_err(|e| e.to_string())
                    .map_err(storage(data_dir.database().display().to_string()))?;
                let runpacks = FsRunpackStore::open(data_dir.runpacks())
                    .map_err(|e| e.to_string())
                    .map_err(storage(data_dir.runpacks().display().to_string()))?;
                DecisionGate::builder()
                    .store(Arc::new(store))
                    .runpack_store(Arc::new(runpacks))
            }
            StoreKind::Memory => DecisionGate::builder()
                .store(Arc::new(MemoryStore::default()))
                .runpack_store(Arc::new(MemoryRunpackStore::default())),
        };
        Self::open_with(loaded, builder, data_dir)
    }

    /// Builds the service on stores the caller chose (the enterprise server passes its
    /// Postgres backends): `builder` carries them; the configuration adds the engine settings,
    /// providers, audit trail (a file, by default under `data_dir`), tool policy and admission.
    ///
    /// # Errors
    /// [`ServeError::Storage`] when the audit file cannot be opened.
    pub fn open_with(
        loaded: Loaded,
        builder: DecisionGateBuilder,
        data_dir: &DataDir,
    ) -> Result<Self, ServeError> {
        let Loaded { config, providers } = loaded;
        let audit_path = config
            .server
            .audit
            .path
            .clone()
            .unwrap_or_else(|| data_dir.audit());
        let audit: Arc<dyn AuditSink> = Arc::new(
            JsonLinesAuditSink::open(&audit_path)
                .map_err(|e| e.to_string())
                .map_err(storage(audit_path.display().to_string()))?,
        );
        let gate = builder
            .config(config.engine.clone())
            .providers(providers)
            .audit_sink(audit.clone())
            .disclose_raw_evidence(config.evidence.disclose_raw_values)
            .build();
        let policy = ToolPolicy {
            feedback: config.server.feedback.clone(),
        };
        let shared = Shared::new(Arc::new(gate), policy, audit, Metrics::new());
        let admission = Arc::new(Admission::new(
            Authenticator::new(&config.server.auth),
            config.server.limits.max_inflight,
            config.server.limits.rate_limit.as_ref(),
        ));
        Ok(Self {
            shared,
            admission,
            config,
        })
    }

    /// What every connection shares (the service, metrics, audit).
    #[must_use]
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves MCP on stdin/stdout until the client closes it.
    ///
    /// # Errors
    /// [`ServeError::Config`] when authentication other than local-only is configured (stdio
    /// has no credentials); [`ServeError::Transport`] when stdio fails.
    pub async fn serve_stdio(self) -> Result<(), ServeError> {
        if self.config.server.auth.mode != crate::config::AuthMode::LocalOnly {
            return Err(ServeError::Config(vec![Problem {
                path: "server.auth.mode".into(),
                message: "stdio carries no credentials: use \"local_only\" or serve HTTP".into(),
            }]));
        }
        let handler = McpHandler::new(self.shared, Transport::Stdio);
        // One JSON-RPC message per line; a longer line is dropped with an error response and
        // the session goes on.
        let transport = AsyncRwTransport::new_server(tokio::io::stdin(), tokio::io::stdout())
            .with_max_line_length(self.config.server.limits.max_body_bytes);
        let running = handler
            .serve(transport)
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))?;
        running
            .waiting()
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))?;
        Ok(())
    }

    /// Binds the Streamable HTTP listener on `addr` (port 0 picks a free port).
    ///
    /// # Errors
    /// [`ServeError::Config`] when the address needs authentication or TLS the configuration
    /// lacks, or TLS files are unusable; [`ServeError::Transport`] when binding fails.
    pub async fn bind_http(&self, addr: SocketAddr) -> Result<HttpServer, ServeError> {
        let config = &self.config;
        let (listener, local_addr, tls) = self.bind(addr, "--http").await?;
        let mut allowed_hosts = config.server.allowed_hosts.clone();
        allowed_hosts.push(local_addr.ip().to_string());
        allowed_hosts.push(local_addr.to_string());
        let options = HttpOptions {
            admission: self.admission.clone(),
            max_body_bytes: config.server.limits.max_body_bytes,
            request_timeout: Duration::from_millis(config.server.request_timeout_ms),
            allowed_hosts,
            tls,
        };
        Ok(HttpServer {
            listener,
            local_addr,
            tls: options.tls.is_some(),
            options,
            shared: self.shared.clone(),
        })
    }
}

impl Server {
    /// Binds the gRPC listener on `addr` (port 0 picks a free port), under the same
    /// authentication, limits and TLS as HTTP.
    ///
    /// # Errors
    /// As [`Self::bind_http`].
    pub async fn bind_grpc(&self, addr: SocketAddr) -> Result<GrpcServer, ServeError> {
        let (listener, local_addr, tls) = self.bind(addr, "--grpc").await?;
        Ok(GrpcServer {
            listener,
            local_addr,
            tls: tls.is_some(),
            options: GrpcOptions {
                admission: self.admission.clone(),
                max_message_bytes: self.config.server.limits.max_body_bytes,
                tls,
            },
            shared: self.shared.clone(),
        })
    }

    /// Checks that `addr` may be exposed with this configuration, loads TLS and binds.
    async fn bind(
        &self,
        addr: SocketAddr,
        flag: &str,
    ) -> Result<(TcpListener, SocketAddr, Option<TlsSettings>), ServeError> {
        let mut problems = Vec::new();
        self.config.exposure_problems(addr, flag, &mut problems);
        if !problems.is_empty() {
            return Err(ServeError::Config(problems));
        }
        let tls = self
            .config
            .server
            .tls
            .as_ref()
            .map(TlsSettings::load)
            .transpose()
            .map_err(|message| {
                ServeError::Config(vec![Problem {
                    path: "server.tls".into(),
                    message,
                }])
            })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServeError::Transport(format!("binding {addr}: {e}")))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServeError::Transport(e.to_string()))?;
        Ok((listener, local_addr, tls))
    }
}

/// A bound listener with its transport's options, not yet serving.
pub struct Bound<O> {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: bool,
    options: O,
    shared: Arc<Shared>,
}

/// A bound Streamable HTTP listener.
pub type HttpServer = Bound<HttpOptions>;
/// A bound gRPC listener.
pub type GrpcServer = Bound<GrpcOptions>;

impl<O> std::fmt::Debug for Bound<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl<O> Bound<O> {
    /// The address it listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether this server terminates TLS.
    #[must_use]
    pub fn tls(&self) -> bool {
        self.tls
    }
}

impl GrpcServer {
    /// Serves until `shutdown` is cancelled, then drains calls in progress.
    ///
    /// # Errors
    /// [`ServeError::Transport`] when the listener fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        grpc::serve(self.listener, self.shared, self.options, shutdown)
            .await
            .map_err(|e| ServeError::Transport(e.to_string()))
    }
}

impl HttpServer {
    /// Serves until `shutdown` is cancelled, then drains requests in progress.
    ///
    /// # Errors
    /// [`ServeError::Transport`] when the listener fails.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let app = http::router(self.shared.clone(), &self.options, &shutdown);
        http::serve(
            self.listener,
            app,
            self.options.tls.clone(),
            self.shared,
            Transport::Http,
            shutdown,
        )
        .await
        .map_err(|e| ServeError::Transport(e.to_string()))
    }
}

/// The listeners a `serve` command asked for, bound and announced, not yet serving.
#[derive(Debug)]
pub struct Listeners {
    http: Option<HttpServer>,
    grpc: Option<GrpcServer>,
}

impl Server {
    /// Binds the Streamable HTTP and gRPC listeners asked for and prints, for each, the line
    /// tests and scripts read to find the port when binding port 0:
    /// `decision-gate: serving MCP on http(s)://ADDR/mcp (NOTE)` and
    /// `decision-gate: serving gRPC on ADDR (FRAMING; NOTE)`.
    ///
    /// # Errors
    /// As [`Self::bind_http`] and [`Self::bind_grpc`].
    pub async fn bind_listeners(
        &self,
        http: Option<SocketAddr>,
        grpc: Option<SocketAddr>,
        note: &str,
    ) -> Result<Listeners, ServeError> {
        let http = match http {
            None => None,
            Some(addr) => {
                let bound = self.bind_http(addr).await?;
                let scheme = if bound.tls() { "https" } else { "http" };
                eprintln!(
                    "decision-gate: serving MCP on {scheme}://{}/mcp ({note})",
                    bound.local_addr()
                );
                Some(bound)
            }
        };
        let grpc = match grpc {
            None => None,
            Some(addr) => {
                let bound = self.bind_grpc(addr).await?;
                let framing = if bound.tls() {
                    "TLS"
                } else {
                    "plaintext HTTP/2"
                };
                eprintln!(
                    "decision-gate: serving gRPC on {} ({framing}; {note})",
                    bound.local_addr()
                );
                Some(bound)
            }
        };
        Ok(Listeners { http, grpc })
    }
}

impl Listeners {
    /// Serves on every listener until `shutdown` is cancelled, then drains them; either
    /// listener failing stops both.
    ///
    /// # Errors
    /// The first listener's [`ServeError::Transport`].
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let (stop_http, stop_grpc) = (shutdown.clone(), shutdown.clone());
        let (h, g) = tokio::join!(
            async {
                match self.http {
                    Some(bound) => bound
                        .run(shutdown.clone())
                        .await
                        .inspect_err(|_| stop_http.cancel()),
                    None => Ok(()),
                }
            },
            async {
                match self.grpc {
                    Some(bound) => bound
                        .run(shutdown.clone())
                        .await
                        .inspect_err(|_| stop_grpc.cancel()),
                    None => Ok(()),
                }
            },
        );
        h.and(g)
    }
}

/// Cancels `token` on Ctrl-C or SIGTERM, so requests in progress finish before exit.
pub async fn cancel_on_signal(token: CancellationToken) {
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
