//! The server: a checked configuration and the parts a composition root chose ([`ServerBuilder`])
//! become a service served over stdio, Streamable HTTP and gRPC.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use decision_gate_core::DecisionGate;
use decision_gate_core::access::{AuditSink, Authorizer, UsageMeter};
use decision_gate_core::identity::Authenticate;
use decision_gate_core::service::DecisionGateBuilder;
use decision_gate_core::store::{RunStore, RunpackStore, ScenarioStore, SchemaRegistry};
use rmcp::ServiceExt as _;
use rmcp::transport::async_rw::AsyncRwTransport;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::caller::Transport;
use crate::config::{Config, Loaded, Problem};
use crate::grpc::{self, GrpcOptions};
use crate::handler::{McpHandler, Shared};
use crate::http::{self, HttpOptions};
use crate::metrics::Metrics;
use crate::noise::DigestKey;
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
    /// The composition root did not give a required part.
    #[error("the server is missing required parts: {0}")]
    Incomplete(String),
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

    /// The default key of credential digests in audit events.
    #[must_use]
    pub fn digest_key(&self) -> PathBuf {
        self.0.join("audit-digest.key")
    }
}

/// A configured server, its stores open, not yet serving.
pub struct Server {
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    config: Config,
    routes: axum::Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`] from every part a deployment may replace: the stores, the runpack
/// store, the audit sink, the usage meter, the authorizer, the authentication and extra HTTP
/// routes. The configuration adds the engine settings, providers, tool policy and limits. This
/// library picks no implementation of its own: each composition root (the `decision-gate`
/// binary, the enterprise server, a test) passes the parts it wants, and [`Self::build`] names
/// any required part that is missing.
pub struct ServerBuilder {
    loaded: Loaded,
    gate: DecisionGateBuilder,
    has_store: bool,
    has_runpacks: bool,
    audit: Option<Arc<dyn AuditSink>>,
    authenticate: Option<Arc<dyn Authenticate>>,
    digest_key: Option<DigestKey>,
    metrics: Option<Metrics>,
    routes: axum::Router,
    /// Routes made once the admission exists, behind it.
    admitted: Vec<AdmittedRoutes>,
}

/// Makes routes that authenticate and admit their requests through the server's admission.
type AdmittedRoutes = Box<dyn FnOnce(Arc<Admission>) -> axum::Router + Send>;

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("has_store", &self.has_store)
            .field("has_runpacks", &self.has_runpacks)
            .field("has_audit", &self.audit.is_some())
            .field("has_authenticate", &self.authenticate.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Scenarios, runs and data shapes (required).
    #[must_use]
    pub fn store<S: ScenarioStore + RunStore + SchemaRegistry + 'static>(
        mut self,
        store: Arc<S>,
    ) -> Self {
        self.gate = self.gate.store(store);
        self.has_store = true;
        self
    }

    /// Where exported runpacks are kept (required).
    #[must_use]
    pub fn runpack_store(mut self, runpacks: Arc<dyn RunpackStore>) -> Self {
        self.gate = self.gate.runpack_store(runpacks);
        self.has_runpacks = true;
        self
    }

    /// The audit trail of every call and every refusal (required).
    #[must_use]
    pub fn audit_sink(mut self, audit: Arc<dyn AuditSink>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// Who the callers of the network listeners are (required).
    #[must_use]
    pub fn authenticate(mut self, authenticate: Arc<dyn Authenticate>) -> Self {
        self.authenticate = Some(authenticate);
        self
    }

    /// The usage meter (the core's default counts in memory and never refuses).
    #[must_use]
    pub fn usage_meter(mut self, usage: Arc<dyn UsageMeter>) -> Self {
        self.gate = self.gate.usage_meter(usage);
        self
    }

    /// Gives each tenant its own evidence providers (the enterprise server): a tenant reaches
    /// only its registry; one without reaches only the configured `[providers]`, which then
    /// hold nothing beyond `time`.
    #[must_use]
    pub fn tenant_providers(
        mut self,
        registries: std::collections::BTreeMap<
            decision_gate_core::TenantId,
            decision_gate_core::ProviderRegistry,
        >,
    ) -> Self {
        self.gate = self.gate.tenant_providers(registries);
        self
    }

    /// Rate limits per credential and per tenant after authorization (none by default beyond
    /// the per-principal limit of admission).
    #[must_use]
    pub fn rate_limit(
        mut self,
        rate_limit: Arc<dyn decision_gate_core::access::RateLimit>,
    ) -> Self {
        self.gate = self.gate.rate_limit(rate_limit);
        self
    }

    /// The metrics the server exposes on `/metrics`; give the same handle to parts that count
    /// into them (a fresh registry by default).
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The authorizer (the core's default is the principal's scope and allowed tools).
    #[must_use]
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.gate = self.gate.authorizer(authorizer);
        self
    }

    /// The key of the digests of presented credentials in audit events
    /// ([`DigestKey::load_or_create`] keeps one across restarts); a random key for the life of
    /// the process when none is given.
    #[must_use]
    pub fn digest_key(mut self, key: DigestKey) -> Self {
        self.digest_key = Some(key);
        self
    }

    /// The digest key of `server.audit.digest_key_path`, else of the data directory's
    /// `audit-digest.key`, created on first start.
    ///
    /// # Errors
    /// [`ServeError::Storage`] when the key cannot be read or created.
    pub fn digest_key_file(self, data_dir: &DataDir) -> Result<Self, ServeError> {
        let path = self
            .loaded
            .config
            .server
            .audit
            .digest_key_path
            .clone()
            .unwrap_or_else(|| data_dir.digest_key());
        let key = DigestKey::load_or_create(&path).map_err(|message| ServeError::Storage {
            what: "the audit digest key".into(),
            message,
        })?;
        Ok(self.digest_key(key))
    }

    /// Routes served beside `/mcp` on the HTTP listener (an admin API, a console). They pass
    /// the server's request-id and timeout layers but not the `/mcp` guard: they authenticate
    /// their own callers. Their paths must not overlap `/mcp`, `/healthz`, `/readyz` or
    /// `/metrics` (axum refuses overlapping routes when the listener starts).
    #[must_use]
    pub fn routes(mut self, routes: axum::Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Routes beside `/mcp`, like [`Self::routes`], made by `make` with the server's
    /// [`Admission`] once it exists, so they pass the same checks as every other request: the
    /// source's authentication-failure budget (with refusals counted, not written one by one,
    /// past it), authentication, the per-principal rate limit and concurrency cap, the in-flight
    /// budget.
    #[must_use]
    pub fn admitted_routes(
        mut self,
        make: impl FnOnce(Arc<Admission>) -> axum::Router + Send + 'static,
    ) -> Self {
        self.admitted.push(Box::new(make));
        self
    }

    /// The server.
    ///
    /// # Errors
    /// [`ServeError::Incomplete`] naming a required part that was not given.
    pub fn build(self) -> Result<Server, ServeError> {
        let missing = [
            (!self.has_store, "store"),
            (!self.has_runpacks, "runpack_store"),
            (self.audit.is_none(), "audit_sink"),
            (self.authenticate.is_none(), "authenticate"),
        ]
        .into_iter()
        .filter_map(|(missing, part)| missing.then_some(part))
        .collect::<Vec<_>>();
        let (Some(audit), Some(authenticate), []) = (self.audit, self.authenticate, &missing[..])
        else {
            return Err(ServeError::Incomplete(missing.join(", ")));
        };
        let Loaded {
            config,
            providers,
            runpack_signer,
            runpack_verify,
        } = self.loaded;
        let mut gate = self.gate;
        if let Some(key) = runpack_signer {
            gate = gate.runpack_signer(key);
        }
        let gate = gate
            .config(config.engine.clone())
            .providers(providers)
            .audit_sink(audit.clone())
            .disclose_raw_evidence(config.evidence.disclose_raw_values)
            .build();
        let policy = ToolPolicy {
            feedback: config.server.feedback.clone(),
            verify: runpack_verify,
        };
        let shared = Shared::new(
            Arc::new(gate),
            policy,
            audit,
            self.metrics.unwrap_or_default(),
        );
        let digests = match self.digest_key {
            Some(key) => key,
            None => DigestKey::random().map_err(|message| ServeError::Storage {
                what: "the audit digest key".into(),
                message,
            })?,
        };
        let admission = Arc::new(Admission::new(authenticate, &config.server.limits, digests));
        let routes = self.admitted.into_iter().fold(self.routes, |routes, make| {
            routes.merge(make(admission.clone()))
        });
        Ok(Server {
            shared,
            admission,
            config,
            routes,
        })
    }
}

impl Server {
    /// A builder for a server with this (checked) configuration.
    #[must_use]
    pub fn builder(loaded: Loaded) -> ServerBuilder {
        ServerBuilder {
            loaded,
            gate: DecisionGate::builder(),
            has_store: false,
            has_runpacks: false,
            audit: None,
            authenticate: None,
            digest_key: None,
            metrics: None,
            routes: axum::Router::new(),
            admitted: Vec::new(),
        }
    }

    /// The configuration it was built with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
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
            header_timeout: Duration::from_millis(config.server.limits.header_timeout_ms),
            allowed_hosts,
            tls,
            routes: self.routes.clone(),
            metrics_auth: config.server.metrics.require_auth,
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
                header_timeout: Duration::from_millis(self.config.server.limits.header_timeout_ms),
                watch: self.config.server.limits.watch.clone(),
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
        http::serve(self.listener, app, &self.options, self.shared, shutdown)
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
