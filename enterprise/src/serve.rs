//! `serve`: the open-source MCP (and gRPC) server on the Postgres backends.
//!
//! Start-up, in order: (with `migrate_on_start`) migrate and provision as the owner; check the
//! application role and the schema; bind and serve. A database that refuses the checks (a
//! newer or unknown schema, an unsafe role) stops the start with the reason. A database that
//! cannot be reached does not: the server serves with its store gate closed (`/readyz` 503,
//! every call `unavailable`), retries the start-up steps every second, and opens the gate once
//! they pass, or stops if the database turns out to be one it must refuse.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use decision_gate_core::access::{ScopeAuthorizer, UsageError, UsageEvent, UsageMeter};
use decision_gate_core::identity::Authenticate;
use decision_gate_core::runpack::FsRunpackStore;
use decision_gate_mcp::metrics::Metrics;
use decision_gate_mcp::server::cancel_on_signal;
use decision_gate_mcp::{DataDir, ServeError, Server};
use decision_gate_store_enterprise::{
    MigrateOptions, PgAuditSink, PgError, PgPool, PgStore, PgUsageMeter, check_app_role,
    check_schema, migrate, record_admin_event,
};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminSettings};
use crate::api_keys::{ApiKeys, Pepper};
use crate::changes::follow_changes;
use crate::config::{DatabaseConfig, EnterpriseConfig, TenancyConfig};
use crate::credentials::{EnterpriseAuthenticator, configured};
use crate::discovery::ProtectedResource;
use crate::oidc::OidcVerifier;
use crate::plans::{FeatureAuthorizer, PlanCache};
use crate::rate_limit::{OnStateChange, PlanRateLimit, SharedSettings};
use crate::{EnterpriseError, GatedStore, RoleAuthorizer, TenancyAuthorizer, provision};

/// How often a server whose database is unreachable retries its start-up steps.
const RETRY: Duration = Duration::from_secs(1);

/// The listeners `serve` was asked for; `None` for both serves HTTP on `server.bind`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeOptions {
    /// Streamable HTTP (`/mcp`, `/healthz`, `/readyz`, `/metrics`).
    pub http: Option<SocketAddr>,
    /// The gRPC API.
    pub grpc: Option<SocketAddr>,
}

/// Serves until SIGTERM or Ctrl-C, then drains requests in progress.
///
/// # Errors
/// [`EnterpriseError::Database`] when the database is one this binary must not serve (or
/// migrating it failed); [`EnterpriseError::Serve`] when the runpack directory or a listener
/// cannot be opened; [`EnterpriseError::Config`] when no listener is configured.
pub async fn serve(config: EnterpriseConfig, options: ServeOptions) -> Result<(), EnterpriseError> {
    let pepper_file = config.pepper_file();
    let EnterpriseConfig {
        server: loaded,
        database,
        tenancy,
        tenant_providers,
        identity,
        usage,
    } = config;
    let http = options.http.or(loaded.config.server.bind);
    if http.is_none() && options.grpc.is_none() {
        return Err(EnterpriseError::Config(vec![decision_gate_mcp::config::Problem {
            path: "server.bind".into(),
            message: "the enterprise server serves over the network: set server.bind or pass --http ADDR (or --grpc ADDR)".into(),
        }]));
    }
    let pool = database.pool().lazy_pool(&database.url)?;
    let pg_store = PgStore::from_pool(pool.clone());
    let store = Arc::new(GatedStore::closed(
        if usage.metering {
            pg_store
        } else {
            pg_store.unmetered()
        },
        "not checked yet",
    ));
    let startup = Startup {
        database,
        tenancy,
        pool: pool.clone(),
    };
    match startup.run().await {
        Ok(()) => store.open(),
        Err(PgError::Unavailable(reason)) => {
            eprintln!(
                "decision-gate-enterprise: the database is unreachable ({reason}); serving unready, retrying every {}s",
                RETRY.as_secs()
            );
            store.set_reason(reason);
        }
        Err(e) => return Err(e.into()),
    }

    let data_dir = DataDir::new(loaded.config.data_dir());
    // Runpacks are files under the data directory, one store per replica (ADR 0009 §8).
    let runpacks = FsRunpackStore::open(data_dir.runpacks()).map_err(|e| ServeError::Storage {
        what: data_dir.runpacks().display().to_string(),
        message: e.to_string(),
    })?;
    // One trail: every audit and usage event in Postgres, none on this replica's disk or in
    // its memory.
    // API keys first; the configured bearer tokens and mTLS clients behind them.
    let pepper = Pepper::load(&pepper_file).map_err(|message| ServeError::Storage {
        what: pepper_file.display().to_string(),
        message,
    })?;
    if pepper.is_none() {
        eprintln!(
            "decision-gate-enterprise: no API-key pepper at {}; API keys are refused until it exists (run `bootstrap`, or copy it from another replica)",
            pepper_file.display()
        );
    }
    let oidc = Arc::new(
        OidcVerifier::new(
            &identity.issuers,
            Some(pool.clone()),
            identity.step_up_max_age_s,
        )
        .map_err(|message| ServeError::Storage {
            what: "identity.issuers".to_owned(),
            message,
        })?,
    );
    let discovery = identity.resource.as_deref().map(ProtectedResource::new);
    let challenge = match &discovery {
        Some(d) => d.challenge(),
        None => r#"Bearer realm="decision-gate""#.to_owned(),
    };
    let credentials = Arc::new(EnterpriseAuthenticator::new(
        ApiKeys::new(pool.clone(), pepper.clone()),
        oidc.clone(),
        configured(&loaded.config.server.auth),
        challenge,
    ));
    let authenticate: Arc<dyn Authenticate> = credentials.clone();
    let roles = RoleAuthorizer::new(Arc::new(ScopeAuthorizer), pool.clone());
    let tenancy_states = Arc::new(TenancyAuthorizer::new(Arc::new(roles), pool.clone()));
    let plans = Arc::new(PlanCache::new(pool.clone()));
    let features = FeatureAuthorizer::new(tenancy_states.clone(), plans.clone());
    let metrics = Metrics::new();
    let rate_limit = PlanRateLimit::new(
        plans.clone(),
        usage.rates,
        usage.redis_url.clone().map(|url| SharedSettings {
            url,
            key_prefix: usage.redis_key_prefix.clone(),
            timeout: Duration::from_millis(usage.redis_timeout_ms),
        }),
        metrics.clone(),
        shared_limiter_reporter(pool.clone()),
    )
    .map_err(|message| {
        EnterpriseError::Config(vec![decision_gate_mcp::config::Problem {
            path: "usage.redis_url".into(),
            message,
        }])
    })?;
    let pg_meter = Arc::new(PgUsageMeter::new(pool.clone()));
    let meter: Arc<dyn UsageMeter> = if usage.metering {
        pg_meter.clone()
    } else {
        Arc::new(Unmetered)
    };
    let server = Server::builder(loaded)
        .store(store.clone())
        .runpack_store(Arc::new(runpacks))
        .audit_sink(Arc::new(PgAuditSink::new(pool.clone())))
        .usage_meter(meter)
        .rate_limit(Arc::new(rate_limit))
        .metrics(metrics)
        .authorizer(Arc::new(features))
        .authenticate(authenticate.clone())
        .tenant_providers(tenant_providers)
        .digest_key_file(&data_dir)?
        .admitted_routes({
            let pool = pool.clone();
            let issuers = identity
                .issuers
                .iter()
                .map(|i| (i.issuer.clone(), i.organisation_id))
                .collect();
            let (rotation_overlap_s, step_up_max_age_s, resource) = (
                identity.rotation_overlap_s,
                identity.step_up_max_age_s,
                identity.resource.clone(),
            );
            move |admission| {
                admin::router(AdminSettings {
                    pool,
                    admission,
                    pepper,
                    rotation_overlap_s,
                    step_up_max_age_s,
                    issuers,
                    resource,
                })
            }
        })
        .routes(
            discovery
                .map(|d| d.routes(oidc.issuer_ids()))
                .unwrap_or_default(),
        )
        .build()?;

    let note = format!(
        "Postgres; audit and usage in Postgres; runpacks in {}",
        data_dir.path().display()
    );
    let listeners = server.bind_listeners(http, options.grpc, &note).await?;
    let shutdown = CancellationToken::new();
    let fatal: Arc<Mutex<Option<PgError>>> = Arc::new(Mutex::new(None));
    if !store.is_open() {
        tokio::spawn(retry_startup(
            startup,
            store.clone(),
            shutdown.clone(),
            fatal.clone(),
        ));
    }
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    tokio::spawn(follow_changes(
        pool.clone(),
        move || {
            credentials.forget();
            tenancy_states.forget();
            plans.forget();
            pg_meter.forget();
        },
        shutdown.clone(),
    ));
    let served = listeners.run(shutdown).await;
    store.inner().close().await;
    if let Some(e) = fatal.lock().ok().and_then(|mut f| f.take()) {
        return Err(e.into());
    }
    served?;
    Ok(())
}

/// The meter of a deployment with metering switched off (never a production one, as the
/// configuration check enforces): nothing is counted, no quota holds.
struct Unmetered;

#[async_trait::async_trait]
impl UsageMeter for Unmetered {
    async fn check(&self, _events: &[UsageEvent]) -> Result<(), UsageError> {
        Ok(())
    }

    async fn record(&self, _events: &[UsageEvent]) -> Result<(), UsageError> {
        Ok(())
    }
}

/// What the shared rate limiter's state changes become: a line in the log and an event in the
/// deployment's audit stream, once per change.
fn shared_limiter_reporter(pool: PgPool) -> OnStateChange {
    Arc::new(move |lost: Option<&str>| {
        let event = serde_json::json!({
            "event": if lost.is_some() { "rate_limiter_shared_lost" } else { "rate_limiter_shared_restored" },
            "component": "redis",
            "decisions": if lost.is_some() { "local" } else { "shared" },
            "reason": lost,
        });
        match lost {
            Some(reason) => tracing::warn!(
                "the shared rate limiter is unreachable ({reason}); each replica limits on its own"
            ),
            None => tracing::info!("the shared rate limiter answers again"),
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            if let Err(e) = record_admin_event(&pool, None, None, &event).await {
                tracing::error!("recording the rate limiter's state change: {e}");
            }
        });
    })
}

/// The start-up steps, repeatable until they pass.
struct Startup {
    database: DatabaseConfig,
    tenancy: TenancyConfig,
    pool: PgPool,
}

impl Startup {
    async fn run(&self) -> Result<(), PgError> {
        if self.database.migrate_on_start
            && let Some(owner_url) = &self.database.owner_url
        {
            let report = migrate(
                owner_url,
                &MigrateOptions {
                    dry_run: false,
                    app_role: self.database.app_role(),
                },
            )
            .await?;
            eprintln!(
                "decision-gate-enterprise: migrations applied by this server: {}",
                crate::serve::versions(&report.applied)
            );
            let owner = PgPool::connect(owner_url).await?;
            let provisioned = provision(&owner, &self.tenancy).await;
            owner.close().await;
            let provisioned = provisioned?;
            if !provisioned.created.is_empty() {
                eprintln!(
                    "decision-gate-enterprise: provisioned {}",
                    provisioned.created.join(", ")
                );
            }
        }
        check_app_role(&self.pool).await?;
        check_schema(&self.pool).await
    }
}

/// `1, 2` or `none`.
pub(crate) fn versions(list: &[decision_gate_store_enterprise::MigrationInfo]) -> String {
    if list.is_empty() {
        return "none".to_owned();
    }
    list.iter()
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Retries the start-up steps until they pass (open the gate) or the database is one to refuse
/// (stop the server with the reason).
async fn retry_startup(
    startup: Startup,
    store: Arc<GatedStore>,
    shutdown: CancellationToken,
    fatal: Arc<Mutex<Option<PgError>>>,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
        match startup.run().await {
            Ok(()) => {
                store.open();
                eprintln!(
                    "decision-gate-enterprise: the database answers and passed the checks; ready"
                );
                return;
            }
            Err(PgError::Unavailable(reason)) => store.set_reason(reason),
            Err(e) => {
                eprintln!("decision-gate-enterprise: refusing to serve: {e}");
                if let Ok(mut f) = fatal.lock() {
                    *f = Some(e);
                }
                shutdown.cancel();
                return;
            }
        }
    }
}
