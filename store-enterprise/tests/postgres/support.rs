//! Scratch databases on the server at `DG_PG_URL` (a superuser URL; default
//! `postgres://postgres@127.0.0.1:5432/postgres`, which `scripts/postgres.sh` provides).
//!
//! Each test gets its own database, so tests run in parallel and the conformance cases may use
//! the fixed tenant ids they use. A migrated, provisioned template is built once per process
//! and copied with `CREATE DATABASE ... TEMPLATE`, which is much faster than migrating anew.
//! Databases are named `dg_test_<pid>_<n>`; tests drop theirs where they can, and every process
//! first drops those left by processes that no longer run.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_store_enterprise::{
    MigrateOptions, PgPool, PgStore, PoolConfig, create_namespace, create_organisation,
    create_tenant, migrate,
};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

/// The application role the tests connect as.
pub(crate) const APP_ROLE: &str = "dg_app";

/// The superuser URL of the test server.
pub(crate) fn superuser_url() -> String {
    std::env::var("DG_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// `DG_PG_URL` with its credentials and database replaced.
fn url_for(credentials: Option<&str>, database: &str) -> String {
    let base = superuser_url();
    let (scheme, rest) = base.split_once("://").expect("DG_PG_URL has a scheme");
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (host, query) = match hostpart.split_once('/') {
        Some((h, tail)) => (h, tail.split_once('?').map(|(_, q)| q)),
        None => match hostpart.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (hostpart, None),
        },
    };
    let user = credentials.or(userinfo);
    let mut url = format!("{scheme}://");
    if let Some(user) = user {
        url.push_str(user);
        url.push('@');
    }
    url.push_str(host);
    url.push('/');
    url.push_str(database);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

async fn superuser() -> PgConnection {
    PgConnection::connect(&superuser_url())
        .await
        .expect("connect to DG_PG_URL as superuser (run scripts/postgres.sh)")
}

static PREPARED: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_name() -> String {
    format!(
        "dg_test_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates the application role if missing, drops databases of dead test processes and
/// builds the migrated template; returns the template's name. Once per process.
async fn template() -> &'static str {
    PREPARED
        .get_or_init(|| async {
            let mut su = superuser().await;
            // Another test process may create the role at the same moment; either wins.
            let created = su
                .execute(
                    "DO $$ BEGIN
                       IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'dg_app') THEN
                         CREATE ROLE dg_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB
                           NOCREATEROLE NOINHERIT PASSWORD 'dg_app';
                       END IF;
                     END $$",
                )
                .await;
            if let Err(e) = created {
                assert!(
                    e.to_string().contains("already exists")
                        || e.to_string().contains("duplicate key"),
                    "create role dg_app: {e}"
                );
            }
            drop_stale(&mut su).await;
            let name = next_name();
            su.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .expect("create template database");
            su.close().await.expect("close");
            let owner_url = url_for(None, &name);
            migrate(
                &owner_url,
                &MigrateOptions {
                    dry_run: false,
                    app_role: Some(APP_ROLE.to_owned()),
                },
            )
            .await
            .expect("migrate the template");
            let owner = PgPool::connect(&owner_url).await.expect("owner pool");
            provision(&owner, &[1, 2, 3], &[1, 2]).await;
            owner.close().await;
            name
        })
        .await
}

/// Provisions organisation 1 with `tenants`, each with `namespaces`.
pub(crate) async fn provision(owner: &PgPool, tenants: &[u64], namespaces: &[u64]) {
    create_organisation(owner, 1, "org")
        .await
        .expect("create organisation");
    for &t in tenants {
        let tenant = TenantId::new(t).expect("tenant");
        create_tenant(owner, 1, tenant, &format!("tenant {t}"))
            .await
            .expect("create tenant");
        for &n in namespaces {
            create_namespace(owner, tenant, NamespaceId::new(n).expect("ns"), "ns")
                .await
                .expect("create namespace");
        }
    }
}

/// Drops `dg_test_<pid>_*` databases whose process has ended.
async fn drop_stale(su: &mut PgConnection) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname::text FROM pg_database WHERE datname LIKE 'dg\\_test\\_%'")
            .fetch_all(&mut *su)
            .await
            .expect("list test databases");
    for (name,) in names {
        let pid = name.split('_').nth(2).unwrap_or_default();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            // Best effort: another process may be dropping it too.
            let _ = su
                .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await;
        }
    }
}

/// One scratch database.
pub(crate) struct ScratchDb {
    /// Its name.
    pub(crate) name: String,
}

impl ScratchDb {
    /// A copy of the migrated template: tenants 1, 2 and 3 of organisation 1, each with
    /// namespaces 1 and 2; `dg_app` granted.
    pub(crate) async fn migrated() -> Self {
        let template = template().await;
        let name = next_name();
        let mut su = superuser().await;
        su.execute(format!("CREATE DATABASE {name} TEMPLATE {template}").as_str())
            .await
            .expect("copy the template");
        su.close().await.expect("close");
        Self { name }
    }

    /// An empty database (no migrations).
    pub(crate) async fn empty() -> Self {
        template().await;
        let name = next_name();
        let mut su = superuser().await;
        su.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        su.close().await.expect("close");
        Self { name }
    }

    /// The URL of the superuser (the owner of everything) on this database.
    pub(crate) fn owner_url(&self) -> String {
        url_for(None, &self.name)
    }

    /// The URL of the application role on this database.
    pub(crate) fn app_url(&self) -> String {
        url_for(Some("dg_app:dg_app"), &self.name)
    }

    /// A pool of the owner.
    pub(crate) async fn owner_pool(&self) -> PgPool {
        PgPool::connect(&self.owner_url())
            .await
            .expect("owner pool")
    }

    /// A connection of the application role.
    pub(crate) async fn app_conn(&self) -> PgConnection {
        PgConnection::connect(&self.app_url())
            .await
            .expect("connect as dg_app")
    }

    /// The store, connected as the application role (checks passed).
    pub(crate) async fn app_store(&self) -> PgStore {
        PgStore::connect(
            &self.app_url(),
            &PoolConfig {
                max_connections: 4,
                acquire_timeout: Duration::from_secs(30),
                ..PoolConfig::default()
            },
        )
        .await
        .expect("connect the store as dg_app")
    }

    /// Drops the database, closing whatever is still connected.
    pub(crate) async fn drop_db(self) {
        let mut su = superuser().await;
        su.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .expect("drop scratch database");
        su.close().await.expect("close");
    }
}
