//! The `Authorizer` suite on the enterprise `TenancyAuthorizer` over the core's scope
//! authorizer, on a real Postgres (`DG_PG_URL`, a superuser URL; `scripts/postgres.sh` provides
//! it): tenant 1 (namespace 1) active, tenant 2 (namespace 1) suspended, tenant 3 missing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use decision_gate_core::access::{
    Authorizer, AuthzError, RequestContext, Resource, ScopeAuthorizer,
};
use decision_gate_core::conformance::{AuthorizerFixture, AuthzRequest};
use decision_gate_core::{Action, NamespaceId, TenantId};
use decision_gate_enterprise::TenancyAuthorizer;
use decision_gate_enterprise::config::TenancyConfig;
use decision_gate_store_enterprise::{MigrateOptions, PgPool, PoolConfig, migrate};
use sqlx::{Connection as _, Executor as _, PgConnection};

fn superuser_url() -> String {
    std::env::var("DG_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `DG_PG_URL` on another database.
fn url_on(database: &str) -> String {
    let base = superuser_url();
    let (server, query) = match base.split_once('?') {
        Some((s, q)) => (s.to_owned(), Some(q.to_owned())),
        None => (base, None),
    };
    let root = server.rsplit_once('/').map_or(server.as_str(), |(r, _)| r);
    match query {
        Some(q) => format!("{root}/{database}?{q}"),
        None => format!("{root}/{database}"),
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A migrated, provisioned database, dropped with the authorizer that holds it.
pub(crate) struct Scratch {
    name: String,
}

impl Scratch {
    pub(crate) async fn create() -> (Self, PgPool) {
        let name = format!(
            "dg_ent_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut su = PgConnection::connect(&superuser_url())
            .await
            .expect("connect to DG_PG_URL (run scripts/postgres.sh)");
        su.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        su.close().await.expect("close");
        let url = url_on(&name);
        migrate(
            &url,
            &MigrateOptions {
                dry_run: false,
                app_role: None,
            },
        )
        .await
        .expect("migrate");
        let owner = PgPool::connect(&url).await.expect("owner pool");
        let tenancy: TenancyConfig = toml::from_str(
            r#"
            organisations = [{ organisation_id = 1, name = "org" }]
            tenants = [
              { tenant_id = 1, organisation_id = 1, name = "a", namespaces = [{ namespace_id = 1, name = "n" }] },
              { tenant_id = 2, organisation_id = 1, name = "b", namespaces = [{ namespace_id = 1, name = "n" }] },
            ]
            "#,
        )
        .expect("tenancy");
        decision_gate_enterprise::provision(&owner, &tenancy)
            .await
            .expect("provision");
        sqlx::query("UPDATE tenants SET state = 'suspended' WHERE tenant_id = 2")
            .execute(&owner)
            .await
            .expect("suspend tenant 2");
        (Self { name }, owner)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own: drop runs inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(mut su) = PgConnection::connect(&superuser_url()).await {
                    let _ = su
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// The authorizer under test, holding its database for as long as the suite uses it.
pub(crate) struct Held {
    pub(crate) authorizer: Arc<dyn Authorizer>,
    pub(crate) _db: Scratch,
}

#[async_trait]
impl Authorizer for Held {
    async fn authorize(
        &self,
        ctx: &RequestContext,
        action: Action,
        resource: &Resource,
    ) -> Result<(), AuthzError> {
        self.authorizer.authorize(ctx, action, resource).await
    }
}

/// A caller acting in `t` / `ns`, scoped to tenant 1 unless `anywhere`, allowed to read runs
/// and ask for the next decision.
pub(crate) fn agent(t: u64, ns: u64, anywhere: bool) -> RequestContext {
    let mut ctx = RequestContext::local(
        TenantId::new(t).expect("tenant"),
        NamespaceId::new(ns).expect("namespace"),
    );
    ctx.principal.subject = "agent".into();
    ctx.principal.tenant_id = (!anywhere).then(|| TenantId::new(1).expect("tenant"));
    ctx.principal.actions = Some([Action::ScenarioStatus, Action::ScenarioNext].into());
    ctx
}

async fn fixture() -> AuthorizerFixture {
    let (db, owner) = Scratch::create().await;
    let authorizer = TenancyAuthorizer::new(Arc::new(ScopeAuthorizer), owner);
    // The same authorizer on a database that cannot be reached: port 1 refuses at once.
    let unreachable = PoolConfig {
        acquire_timeout: Duration::from_secs(2),
        ..PoolConfig::default()
    }
    .lazy_pool("postgres://postgres@127.0.0.1:1/none")
    .expect("a lazy pool");
    let run = Resource::new("run", "r");
    let ask = |ctx, action| AuthzRequest::new(ctx, action, run.clone());
    AuthorizerFixture {
        authorizer: Arc::new(Held {
            authorizer: Arc::new(authorizer),
            _db: db,
        }),
        allowed: vec![
            ask(agent(1, 1, false), Action::ScenarioNext),
            ask(agent(1, 1, true), Action::ScenarioStatus),
        ],
        out_of_scope: vec![
            // Another tenant than the principal's.
            ask(agent(2, 1, false), Action::ScenarioNext),
            // A namespace that was never provisioned, and a tenant that does not exist.
            ask(agent(1, 2, true), Action::ScenarioStatus),
            ask(agent(3, 1, true), Action::ScenarioNext),
        ],
        denied: vec![
            ask(agent(1, 1, false), Action::ScenarioDefine),
            // A suspended tenant, to a caller allowed to act in it.
            ask(agent(2, 1, true), Action::ScenarioNext),
        ],
        undecidable: Some(Arc::new(TenancyAuthorizer::new(
            Arc::new(ScopeAuthorizer),
            unreachable,
        ))),
    }
}

decision_gate_core::authorizer_conformance!(fixture);
