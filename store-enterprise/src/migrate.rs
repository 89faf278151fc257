//! Embedded migrations, the start-up schema check, the application role's grants and the check
//! that the application role cannot see past row-level security.
//!
//! Migrations run on one dedicated connection of the owner role under sqlx's Postgres advisory
//! lock (`pg_advisory_lock` keyed by the database name, taken before sqlx even creates its
//! `_sqlx_migrations` table), so replicas starting together apply each migration exactly once:
//! the others wait, then find nothing pending. The lock is session-level, so the connection is
//! closed afterwards rather than returned to a pool, where a lock left by a failed run would
//! linger.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Connection, Executor};

use crate::error::PgError;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// One migration, by version and description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationInfo {
    /// The version (the file's numeric prefix).
    pub version: i64,
    /// The description (the file's name after the prefix).
    pub description: String,
}

/// What [`migrate`] did or, in a dry run, would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// Whether nothing was applied on purpose.
    pub dry_run: bool,
    /// Migrations that were applied before this call.
    pub already_applied: Vec<MigrationInfo>,
    /// Migrations this call applied (empty in a dry run).
    pub applied: Vec<MigrationInfo>,
    /// Migrations still to apply (in a dry run, what a real run would apply).
    pub pending: Vec<MigrationInfo>,
}

/// How to run [`migrate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateOptions {
    /// Report what would be applied, apply nothing.
    pub dry_run: bool,
    /// The application role to grant its privileges to after migrating (see
    /// [`grant_app_role`]); `None` grants nothing.
    pub app_role: Option<String>,
}

/// The migrations embedded in this binary.
#[must_use]
pub fn known_migrations() -> Vec<MigrationInfo> {
    MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationInfo {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect()
}

/// One row of `_sqlx_migrations`.
struct Applied {
    checksum: Vec<u8>,
    success: bool,
}

/// The applied migrations by version; empty when none was ever applied.
async fn applied(conn: &mut PgConnection) -> Result<BTreeMap<i64, Applied>, PgError> {
    let (exists,): (bool,) = sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(version, checksum, success)| (version, Applied { checksum, success }))
        .collect())
}

fn versions(list: &[i64]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses applied migrations this binary does not know, knows with other contents, or that
/// failed part-way.
fn refuse_unknown(applied: &BTreeMap<i64, Applied>) -> Result<(), PgError> {
    let known: BTreeMap<i64, &[u8]> = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m.checksum.as_ref()))
        .collect();
    let newest = known.keys().next_back().copied().unwrap_or(0);
    let unknown: Vec<i64> = applied
        .keys()
        .copied()
        .filter(|v| !known.contains_key(v))
        .collect();
    if !unknown.is_empty() {
        return Err(PgError::UnknownSchema(format!(
            "the database has migration version(s) {} that this binary does not know (its newest \
             is {newest}); it was migrated by a newer release, so run that release or a newer one",
            versions(&unknown)
        )));
    }
    let changed: Vec<i64> = applied
        .iter()
        .filter(|(v, a)| known.get(v).is_some_and(|k| *k != a.checksum.as_slice()))
        .map(|(v, _)| *v)
        .collect();
    if !changed.is_empty() {
        return Err(PgError::UnknownSchema(format!(
            "migration version(s) {} were applied with other contents than this binary's",
            versions(&changed)
        )));
    }
    let failed: Vec<i64> = applied
        .iter()
        .filter(|(_, a)| !a.success)
        .map(|(v, _)| *v)
        .collect();
    if !failed.is_empty() {
        return Err(PgError::UnknownSchema(format!(
            "migration version(s) {} failed part-way; repair the database before serving",
            versions(&failed)
        )));
    }
    Ok(())
}

fn pending(applied: &BTreeMap<i64, Applied>) -> Vec<MigrationInfo> {
    known_migrations()
        .into_iter()
        .filter(|m| !applied.contains_key(&m.version))
        .collect()
}

fn infos(versions: impl Iterator<Item = i64>) -> Vec<MigrationInfo> {
    let known = known_migrations();
    versions
        .filter_map(|v| known.iter().find(|m| m.version == v).cloned())
        .collect()
}

/// Applies the embedded migrations to the database at `owner_url` (a role that owns the schema
/// and bypasses row-level security: the migration owner or a superuser), then grants the
/// application role its privileges when `options.app_role` names one. With `dry_run`, reports
/// what is pending and changes nothing.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached; [`PgError::UnknownSchema`]
/// when it has migrations this binary does not know (or with other contents);
/// [`PgError::Migration`] when a migration fails (its transaction is rolled back).
pub async fn migrate(
    owner_url: &str,
    options: &MigrateOptions,
) -> Result<MigrationReport, PgError> {
    let mut conn = PgConnection::connect(owner_url).await?;
    let result = migrate_on(&mut conn, options).await;
    // Closing ends the session and with it any advisory lock a failed run left behind.
    let _ = conn.close().await;
    result
}

async fn migrate_on(
    conn: &mut PgConnection,
    options: &MigrateOptions,
) -> Result<MigrationReport, PgError> {
    if options.dry_run {
        let before = applied(&mut *conn).await?;
        refuse_unknown(&before)?;
        return Ok(MigrationReport {
            dry_run: true,
            already_applied: infos(before.keys().copied()),
            applied: Vec::new(),
            pending: pending(&before),
        });
    }
    // The same lock sqlx takes (advisory locks nest within a session), held around the whole
    // run so "before" and "after" are this call's own view and the grants never race.
    conn.lock()
        .await
        .map_err(|e| PgError::Migration(e.to_string()))?;
    let before = applied(&mut *conn).await?;
    refuse_unknown(&before)?;
    // sqlx's own loop (`Migrator::run`), spelled out over the public `Migrate` calls so the
    // future stays `Send`; each migration runs in its own transaction.
    let failed = |e: sqlx::migrate::MigrateError| PgError::Migration(e.to_string());
    conn.ensure_migrations_table().await.map_err(failed)?;
    for migration in MIGRATOR.iter() {
        if migration.migration_type.is_up_migration() && !before.contains_key(&migration.version) {
            conn.apply(migration)
                .await
                .map_err(|e| PgError::Migration(format!("version {}: {e}", migration.version)))?;
        }
    }
    let after = applied(&mut *conn).await?;
    if let Some(role) = &options.app_role {
        grant_app_role(&mut *conn, role).await?;
    }
    conn.unlock()
        .await
        .map_err(|e| PgError::Migration(e.to_string()))?;
    Ok(MigrationReport {
        dry_run: false,
        already_applied: infos(before.keys().copied()),
        applied: infos(after.keys().copied().filter(|v| !before.contains_key(v))),
        pending: pending(&after),
    })
}

/// Refuses to serve a database whose schema is not exactly what this binary expects: a newer
/// or unknown migration, one with other contents, one that failed, or one still pending.
///
/// # Errors
/// [`PgError::UnknownSchema`], [`PgError::SchemaBehind`] naming the versions;
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn check_schema(pool: &PgPool) -> Result<(), PgError> {
    let mut conn = pool.acquire().await?;
    let applied = applied(&mut conn).await?;
    drop(conn);
    refuse_unknown(&applied)?;
    let pending = pending(&applied);
    if !pending.is_empty() {
        let list: Vec<i64> = pending.iter().map(|m| m.version).collect();
        return Err(PgError::SchemaBehind(format!(
            "migration version(s) {} are not applied; run `decision-gate-enterprise migrate`",
            versions(&list)
        )));
    }
    Ok(())
}

/// What the application role may do, table by table: read and append, update only run heads
/// and lifecycle states, never delete or truncate (except a revoked role binding).
const APP_GRANTS: &[(&str, &str)] = &[
    // The admin API creates tenants and namespaces and moves their (and organisations') state;
    // names and ids never change, and no row is deleted ("deleted" is a state).
    ("organisations", "SELECT, UPDATE (state)"),
    ("tenants", "SELECT, INSERT, UPDATE (state)"),
    ("namespaces", "SELECT, INSERT, UPDATE (state)"),
    (
        "FUNCTION dg_organisation_tenants(bigint, bigint, int)",
        "EXECUTE",
    ),
    ("role_bindings", "SELECT, INSERT, DELETE"),
    (
        "identity_providers",
        "SELECT, INSERT, DELETE, UPDATE (settings_json, updated_by, updated_at)",
    ),
    ("scenarios", "SELECT, INSERT"),
    ("runs", "SELECT, INSERT, UPDATE"),
    ("run_entries", "SELECT, INSERT"),
    ("data_shapes", "SELECT, INSERT"),
    ("usage_events", "SELECT, INSERT"),
    // Plans and overrides are the operator's (the owner's connection); calls read them, and
    // count into the shares of their tenant's counters.
    ("plans", "SELECT"),
    ("plan_quotas", "SELECT"),
    ("quota_overrides", "SELECT"),
    ("quota_epoch", "SELECT"),
    (
        "quota_shards",
        "SELECT, INSERT, UPDATE (day_start, day_used, day_cap, day_for, month_start, \
         month_used, month_cap, month_for, total_used, total_cap, total_for, spread_epoch)",
    ),
    ("audit_events", "SELECT, INSERT"),
    // Append only: operators read the deployment stream as the owner.
    ("deployment_audit_events", "INSERT"),
    // Authentication reads keys; the admin API creates them and moves their end. A key's scope,
    // roles and hash never change, and no key is deleted.
    (
        "api_keys",
        "SELECT, INSERT, UPDATE (expires_at, revoked_at)",
    ),
    // The start-up schema check reads it.
    ("_sqlx_migrations", "SELECT"),
];

/// Checks that `role` is a plain identifier and quotes it.
fn quoted_role(role: &str) -> Result<String, PgError> {
    let ok = !role.is_empty()
        && role.len() <= 63
        && role
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !role.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(PgError::Invalid {
            field: "app_role",
            message: format!(
                "{role:?} must be 1 to 63 characters of a-z, 0-9 and _, not starting with a digit"
            ),
        });
    }
    Ok(format!("\"{role}\""))
}

/// Grants `role` the data privileges the store needs on the current schema and nothing else.
/// The role must exist; the caller must own the tables.
///
/// # Errors
/// [`PgError::Invalid`] for a malformed role name; [`PgError::MissingParent`] when the role
/// does not exist; [`PgError::Unavailable`] otherwise.
pub async fn grant_app_role(conn: &mut PgConnection, role: &str) -> Result<(), PgError> {
    let quoted = quoted_role(role)?;
    let (exists,): (bool,) =
        sqlx::query_as("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        return Err(PgError::MissingParent {
            what: "role",
            id: role.to_owned(),
        });
    }
    let (schema,): (String,) = sqlx::query_as("SELECT quote_ident(current_schema())")
        .fetch_one(&mut *conn)
        .await?;
    conn.execute(format!("GRANT USAGE ON SCHEMA {schema} TO {quoted}").as_str())
        .await?;
    for (table, privileges) in APP_GRANTS {
        conn.execute(format!("GRANT {privileges} ON {table} TO {quoted}").as_str())
            .await?;
    }
    Ok(())
}

/// Refuses a connection whose role could see past row-level security: a superuser, a role with
/// BYPASSRLS, or a member of a tenant table's owner (an owner can switch the policies off).
///
/// # Errors
/// [`PgError::UnsafeRole`] naming the reason; [`PgError::Unavailable`] when the database
/// cannot be reached.
pub async fn check_app_role(pool: &PgPool) -> Result<(), PgError> {
    let (user, superuser, bypass, owned): (String, bool, bool, Option<String>) = sqlx::query_as(
        "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls,
                (SELECT string_agg(c.relname, ', ' ORDER BY c.relname)
                   FROM pg_class c
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
                    AND pg_has_role(current_user, c.relowner, 'MEMBER'))
           FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(pool)
    .await?;
    let reason = if superuser {
        "is a superuser".to_owned()
    } else if bypass {
        "has BYPASSRLS".to_owned()
    } else if let Some(tables) = owned {
        format!("owns (or is a member of the owner of) {tables}")
    } else {
        return Ok(());
    };
    Err(PgError::UnsafeRole(format!(
        "the application role {user} {reason}, so row-level security would not bind it; connect \
         as a dedicated role (LOGIN NOSUPERUSER NOBYPASSRLS, not the tables' owner)"
    )))
}
