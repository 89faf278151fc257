//! Role bindings at rest (migration 6): a role granted to an identity-provider subject at an
//! organisation, a tenant or a namespace. The role names and where each may be bound are the
//! enterprise server's; the database refuses an org_owner below an organisation and a
//! tenant_admin on one namespace as well.

use decision_gate_core::ids::{NamespaceId, TenantId};
use serde::Serialize;
use sqlx::postgres::PgPool;

use crate::KeyScope;
use crate::error::PgError;
use crate::tenancy::announce;

/// The most bindings one subject may hold (in all organisations).
pub const MAX_SUBJECT_BINDINGS: i64 = 256;
/// The longest page of bindings one listing returns.
pub const MAX_BINDING_PAGE: u32 = 500;

/// A binding to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBinding {
    /// Where: an organisation, optionally one tenant and one of its namespaces.
    pub scope: KeyScope,
    /// The subject's issuer.
    pub issuer: String,
    /// The subject (`sub`).
    pub subject: String,
    /// The role's name.
    pub role: String,
    /// Who granted it.
    pub created_by: String,
}

/// A stored binding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindingRecord {
    /// Its id.
    pub binding_id: i64,
    /// Where.
    pub scope: KeyScope,
    /// The subject's issuer.
    pub issuer: String,
    /// The subject.
    pub subject: String,
    /// The role.
    pub role: String,
    /// Who granted it.
    pub created_by: String,
    /// When, unix seconds.
    pub created_at: i64,
}

const SELECT: &str = "SELECT binding_id, organisation_id, scope_tenant, scope_namespace, issuer,
        subject, role, created_by, extract(epoch FROM created_at)::bigint FROM role_bindings";

type Row = (
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    String,
    String,
    String,
    String,
    i64,
);

fn record(row: Row) -> Result<BindingRecord, PgError> {
    let (binding_id, organisation_id, tenant, namespace, issuer, subject, role, created_by, at) =
        row;
    let out_of_range = || {
        PgError::Unavailable(format!(
            "role binding {binding_id}: a stored id is out of range"
        ))
    };
    let tenant_id = tenant
        .map(|t| {
            u64::try_from(t)
                .ok()
                .and_then(|t| TenantId::new(t).ok())
                .ok_or_else(out_of_range)
        })
        .transpose()?;
    let namespace_id = namespace
        .map(|n| {
            u64::try_from(n)
                .ok()
                .and_then(|n| NamespaceId::new(n).ok())
                .ok_or_else(out_of_range)
        })
        .transpose()?;
    Ok(BindingRecord {
        binding_id,
        scope: KeyScope {
            organisation_id,
            tenant_id,
            namespace_id,
        },
        issuer,
        subject,
        role,
        created_by,
        created_at: at,
    })
}

/// Grants a role; granting one that exists answers the existing binding.
///
/// # Errors
/// [`PgError::MissingParent`] when the scope does not exist; [`PgError::Invalid`] when the
/// subject holds [`MAX_SUBJECT_BINDINGS`] already, or the role cannot be bound there;
/// [`PgError::Unavailable`] otherwise.
pub async fn grant_role(pool: &PgPool, binding: &NewBinding) -> Result<BindingRecord, PgError> {
    let mut tx = pool.begin().await?;
    // Serialises grants to one subject, so the count below holds.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(length($1) || ':' || $1 || $2, 7))")
        .bind(&binding.issuer)
        .bind(&binding.subject)
        .execute(&mut *tx)
        .await?;
    let (held,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM role_bindings WHERE issuer = $1 AND subject = $2")
            .bind(&binding.issuer)
            .bind(&binding.subject)
            .fetch_one(&mut *tx)
            .await?;
    if held >= MAX_SUBJECT_BINDINGS {
        return Err(PgError::Invalid {
            field: "subject",
            message: format!("holds {held} role bindings, the most one subject may hold"),
        });
    }
    let scope = binding.scope;
    let inserted: Option<Row> = sqlx::query_as(&format!(
        "WITH b AS (
            INSERT INTO role_bindings (organisation_id, scope_tenant, scope_namespace, issuer,
                                       subject, role, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING *)
         {}",
        SELECT.replace("FROM role_bindings", "FROM b")
    ))
    .bind(scope.organisation_id)
    .bind(scope.tenant_id.map(TenantId::as_i64))
    .bind(scope.namespace_id.map(NamespaceId::as_i64))
    .bind(&binding.issuer)
    .bind(&binding.subject)
    .bind(&binding.role)
    .bind(&binding.created_by)
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            PgError::MissingParent {
                what: if scope.namespace_id.is_some() {
                    "namespace"
                } else {
                    "tenant"
                },
                id: format!(
                    "{} in organisation {}",
                    scope.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                    scope.organisation_id
                ),
            }
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23514") => PgError::Invalid {
            field: "role",
            message: format!("{} cannot be bound at this scope", binding.role),
        },
        _ => e.into(),
    })?;
    let row = match inserted {
        Some(row) => row,
        None => {
            sqlx::query_as(&format!(
            "{SELECT} WHERE issuer = $1 AND subject = $2 AND role = $3 AND organisation_id = $4
               AND scope_tenant IS NOT DISTINCT FROM $5 AND scope_namespace IS NOT DISTINCT FROM $6"
        ))
            .bind(&binding.issuer)
            .bind(&binding.subject)
            .bind(&binding.role)
            .bind(scope.organisation_id)
            .bind(scope.tenant_id.map(TenantId::as_i64))
            .bind(scope.namespace_id.map(NamespaceId::as_i64))
            .fetch_one(&mut *tx)
            .await?
        }
    };
    tx.commit().await?;
    record(row)
}

/// The binding with this id.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn binding(pool: &PgPool, binding_id: i64) -> Result<Option<BindingRecord>, PgError> {
    let row: Option<Row> = sqlx::query_as(&format!("{SELECT} WHERE binding_id = $1"))
        .bind(binding_id)
        .fetch_optional(pool)
        .await?;
    row.map(record).transpose()
}

/// Revokes (deletes) a binding; answers it, `None` when it did not exist.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn revoke_binding(
    pool: &PgPool,
    binding_id: i64,
) -> Result<Option<BindingRecord>, PgError> {
    let mut tx = pool.begin().await?;
    let row: Option<Row> = sqlx::query_as(&format!(
        "WITH b AS (DELETE FROM role_bindings WHERE binding_id = $1 RETURNING *) {}",
        SELECT.replace("FROM role_bindings", "FROM b")
    ))
    .bind(binding_id)
    .fetch_optional(&mut *tx)
    .await?;
    announce(&mut *tx).await?;
    tx.commit().await?;
    row.map(record).transpose()
}

/// Every binding of one subject (at most [`MAX_SUBJECT_BINDINGS`]).
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn subject_bindings(
    pool: &PgPool,
    issuer: &str,
    subject: &str,
) -> Result<Vec<BindingRecord>, PgError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE issuer = $1 AND subject = $2 ORDER BY binding_id LIMIT $3"
    ))
    .bind(issuer)
    .bind(subject)
    .bind(MAX_SUBJECT_BINDINGS)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(record).collect()
}

/// One page of an organisation's bindings (of one tenant when `tenant` is given), in id order
/// after `after`.
///
/// # Errors
/// [`PgError::Invalid`] for a limit out of range; [`PgError::Unavailable`] otherwise.
pub async fn list_bindings(
    pool: &PgPool,
    organisation_id: i64,
    tenant: Option<TenantId>,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<BindingRecord>, PgError> {
    if !(1..=MAX_BINDING_PAGE).contains(&limit) {
        return Err(PgError::Invalid {
            field: "limit",
            message: format!("must be between 1 and {MAX_BINDING_PAGE}, got {limit}"),
        });
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "{SELECT} WHERE organisation_id = $1 AND ($2::bigint IS NULL OR scope_tenant = $2)
            AND binding_id > coalesce($3, 0) ORDER BY binding_id LIMIT $4"
    ))
    .bind(organisation_id)
    .bind(tenant.map(TenantId::as_i64))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(record).collect()
}
