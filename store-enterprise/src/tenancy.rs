//! Tenancy administration: organisations, their tenants, and the tenants' namespaces. Data can
//! only be stored in a namespace that exists (composite foreign keys), so these run before a
//! tenant's first call. They run on the owner's pool (the application role may only read
//! tenants and namespaces) and are idempotent: provisioning what already exists with the same
//! parent is `Existing`.

use decision_gate_core::ids::{NamespaceId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::codec::{stored_namespace, stored_tenant};
use crate::error::PgError;

/// The lifecycle state of an organisation, tenant or namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// In use.
    Active,
    /// Kept, but not to be served.
    Suspended,
    /// Marked for erasure.
    Deleted,
}

/// Whether a provisioning call created the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provisioned {
    /// It was created.
    Created,
    /// It existed already, under the same parent; nothing changed.
    Existing,
}

fn check_name(name: &str) -> Result<(), PgError> {
    if name.is_empty() || name.len() > 256 || name.chars().any(char::is_control) {
        return Err(PgError::Invalid {
            field: "name",
            message: "must be 1 to 256 bytes without control characters".to_owned(),
        });
    }
    Ok(())
}

/// The channel on which the database announces a change to tenancy or identity (a state, a
/// key, a binding, a provider): every replica listens and drops what it remembers of them.
pub const CHANGES_CHANNEL: &str = "dg_identity_changed";

/// Announces a change on [`CHANGES_CHANNEL`]; delivered when `executor`'s transaction commits,
/// never if it rolls back.
pub(crate) async fn announce<'e>(executor: impl sqlx::PgExecutor<'e>) -> Result<(), PgError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANGES_CHANNEL)
        .execute(executor)
        .await?;
    Ok(())
}

/// A transaction in `tenant`'s scope, so forced row-level security admits the rows even for an
/// owner role without BYPASSRLS.
pub(crate) async fn begin_for(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Transaction<'static, Postgres>, PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
        .bind(tenant.as_i64().to_string())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// Maps a foreign-key violation to "the parent `what` `id` does not exist".
fn missing_parent(what: &'static str, id: String) -> impl FnOnce(sqlx::Error) -> PgError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            PgError::MissingParent { what, id }
        }
        _ => e.into(),
    }
}

fn provisioned(rows_inserted: u64) -> Provisioned {
    if rows_inserted == 1 {
        Provisioned::Created
    } else {
        Provisioned::Existing
    }
}

/// Creates organisation `organisation_id` (1..=i64::MAX).
///
/// # Errors
/// [`PgError::Invalid`] for a bad id or name; [`PgError::Unavailable`] otherwise.
pub async fn create_organisation(
    pool: &PgPool,
    organisation_id: i64,
    name: &str,
) -> Result<Provisioned, PgError> {
    if organisation_id <= 0 {
        return Err(PgError::Invalid {
            field: "organisation_id",
            message: format!("must be between 1 and {}, got {organisation_id}", i64::MAX),
        });
    }
    check_name(name)?;
    let inserted = sqlx::query(
        "INSERT INTO organisations (organisation_id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(organisation_id)
    .bind(name)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(provisioned(inserted))
}

/// Creates tenant `tenant_id` in organisation `organisation_id`.
///
/// # Errors
/// [`PgError::MissingParent`] when the organisation does not exist; [`PgError::Conflict`] when
/// the tenant exists in another organisation; [`PgError::Invalid`] for a bad name.
pub async fn create_tenant(
    pool: &PgPool,
    organisation_id: i64,
    tenant_id: TenantId,
    name: &str,
) -> Result<Provisioned, PgError> {
    check_name(name)?;
    let mut tx = begin_for(pool, tenant_id).await?;
    let inserted = sqlx::query(
        "INSERT INTO tenants (tenant_id, organisation_id, name) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id.as_i64())
    .bind(organisation_id)
    .bind(name)
    .execute(&mut *tx)
    .await
    .map_err(missing_parent("organisation", organisation_id.to_string()))?
    .rows_affected();
    if inserted == 0 {
        let (existing,): (i64,) =
            sqlx::query_as("SELECT organisation_id FROM tenants WHERE tenant_id = $1")
                .bind(tenant_id.as_i64())
                .fetch_one(&mut *tx)
                .await?;
        if existing != organisation_id {
            return Err(PgError::Conflict {
                what: "tenant",
                id: tenant_id.to_string(),
            });
        }
        return Ok(Provisioned::Existing);
    }
    announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(Provisioned::Created)
}

/// Creates namespace `namespace_id` of tenant `tenant_id`.
///
/// # Errors
/// [`PgError::MissingParent`] when the tenant does not exist; [`PgError::Invalid`] for a bad
/// name.
pub async fn create_namespace(
    pool: &PgPool,
    tenant_id: TenantId,
    namespace_id: NamespaceId,
    name: &str,
) -> Result<Provisioned, PgError> {
    check_name(name)?;
    let mut tx = begin_for(pool, tenant_id).await?;
    let inserted = sqlx::query(
        "INSERT INTO namespaces (tenant_id, namespace_id, name) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant_id.as_i64())
    .bind(namespace_id.as_i64())
    .bind(name)
    .execute(&mut *tx)
    .await
    .map_err(missing_parent("tenant", tenant_id.to_string()))?
    .rows_affected();
    if inserted == 1 {
        announce(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(provisioned(inserted))
}

/// The lifecycle state of a tenant, or `None` when it does not exist (or is outside the
/// pool's view).
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn tenant_state(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Option<LifecycleState>, PgError> {
    let mut tx = begin_for(pool, tenant_id).await?;
    let state: Option<(String,)> = sqlx::query_as("SELECT state FROM tenants WHERE tenant_id = $1")
        .bind(tenant_id.as_i64())
        .fetch_optional(&mut *tx)
        .await?;
    tx.commit().await?;
    state.map(|(s,)| lifecycle(&s)).transpose()
}

fn lifecycle(state: &str) -> Result<LifecycleState, PgError> {
    serde_json::from_value(serde_json::Value::String(state.to_owned()))
        .map_err(|_| PgError::Unavailable(format!("unknown lifecycle state {state:?}")))
}

/// Where a tenant stands: its organisation, its state, and the state of one of its namespaces
/// (`None` when that namespace does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceStanding {
    /// The tenant's organisation.
    pub organisation_id: i64,
    /// The organisation's state.
    pub organisation: LifecycleState,
    /// The tenant's name.
    pub tenant_name: String,
    /// The tenant's state.
    pub tenant: LifecycleState,
    /// The namespace's state, `None` when it does not exist.
    pub namespace: Option<LifecycleState>,
}

/// The organisation and state of a tenant and the state of one of its namespaces, in one
/// statement: `None` when the tenant does not exist. Read in the tenant's scope, so it works as
/// the application role under row-level security.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn namespace_state(
    pool: &PgPool,
    tenant_id: TenantId,
    namespace_id: NamespaceId,
) -> Result<Option<NamespaceStanding>, PgError> {
    let mut tx = begin_for(pool, tenant_id).await?;
    let row: Option<(i64, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT t.organisation_id, o.state, t.name, t.state, n.state FROM tenants t
           JOIN organisations o ON o.organisation_id = t.organisation_id
           LEFT JOIN namespaces n ON n.tenant_id = t.tenant_id AND n.namespace_id = $2
          WHERE t.tenant_id = $1",
    )
    .bind(tenant_id.as_i64())
    .bind(namespace_id.as_i64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    row.map(
        |(organisation_id, organisation, tenant_name, tenant, namespace)| {
            Ok(NamespaceStanding {
                organisation_id,
                organisation: lifecycle(&organisation)?,
                tenant_name,
                tenant: lifecycle(&tenant)?,
                namespace: namespace.as_deref().map(lifecycle).transpose()?,
            })
        },
    )
    .transpose()
}

/// A tenant as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TenantRow {
    /// Its id.
    pub tenant_id: TenantId,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: LifecycleState,
}

/// A namespace as the admin API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceRow {
    /// Its id within the tenant.
    pub namespace_id: NamespaceId,
    /// Its name.
    pub name: String,
    /// Its state.
    pub state: LifecycleState,
}

/// The longest page of tenants or namespaces one listing returns.
pub const MAX_TENANCY_PAGE: u32 = 500;

fn page_limit(limit: u32) -> Result<i32, PgError> {
    if !(1..=MAX_TENANCY_PAGE).contains(&limit) {
        return Err(PgError::Invalid {
            field: "limit",
            message: format!("must be between 1 and {MAX_TENANCY_PAGE}, got {limit}"),
        });
    }
    Ok(i32::try_from(limit).unwrap_or(i32::MAX))
}

fn out_of_range(value: i64) -> PgError {
    PgError::Unavailable(format!("stored id {value} is out of range"))
}

/// The name and state of organisation `organisation_id`, `None` when it does not exist.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn organisation(
    pool: &PgPool,
    organisation_id: i64,
) -> Result<Option<(String, LifecycleState)>, PgError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT name, state FROM organisations WHERE organisation_id = $1")
            .bind(organisation_id)
            .fetch_optional(pool)
            .await?;
    row.map(|(name, state)| Ok((name, lifecycle(&state)?)))
        .transpose()
}

/// One page of an organisation's tenants, in id order after `after`.
///
/// # Errors
/// [`PgError::Invalid`] for a limit out of range; [`PgError::Unavailable`] otherwise.
pub async fn list_tenants(
    pool: &PgPool,
    organisation_id: i64,
    after: Option<TenantId>,
    limit: u32,
) -> Result<Vec<TenantRow>, PgError> {
    let limit = page_limit(limit)?;
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT tenant_id, name, state FROM dg_organisation_tenants($1, $2, $3)")
            .bind(organisation_id)
            .bind(after.map(TenantId::as_i64))
            .bind(limit)
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(id, name, state)| {
            Ok(TenantRow {
                tenant_id: stored_tenant(id).ok_or_else(|| out_of_range(id))?,
                name,
                state: lifecycle(&state)?,
            })
        })
        .collect()
}

/// One page of a tenant's namespaces, in id order after `after`.
///
/// # Errors
/// [`PgError::Invalid`] for a limit out of range; [`PgError::Unavailable`] otherwise.
pub async fn list_namespaces(
    pool: &PgPool,
    tenant_id: TenantId,
    after: Option<NamespaceId>,
    limit: u32,
) -> Result<Vec<NamespaceRow>, PgError> {
    let limit = page_limit(limit)?;
    let mut tx = begin_for(pool, tenant_id).await?;
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT namespace_id, name, state FROM namespaces
          WHERE tenant_id = $1 AND namespace_id > coalesce($2, 0)
          ORDER BY namespace_id LIMIT $3",
    )
    .bind(tenant_id.as_i64())
    .bind(after.map(NamespaceId::as_i64))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.into_iter()
        .map(|(id, name, state)| {
            Ok(NamespaceRow {
                namespace_id: stored_namespace(id).ok_or_else(|| out_of_range(id))?,
                name,
                state: lifecycle(&state)?,
            })
        })
        .collect()
}

fn state_name(state: LifecycleState) -> &'static str {
    match state {
        LifecycleState::Active => "active",
        LifecycleState::Suspended => "suspended",
        LifecycleState::Deleted => "deleted",
    }
}

/// Moves an organisation to `state`. A deleted organisation stays deleted. Answers the state
/// before, `None` when it does not exist.
///
/// # Errors
/// [`PgError::Conflict`] when it is deleted and `state` is not; [`PgError::Unavailable`]
/// otherwise.
pub async fn set_organisation_state(
    pool: &PgPool,
    organisation_id: i64,
    state: LifecycleState,
) -> Result<Option<LifecycleState>, PgError> {
    let record = Lifecycle {
        what: "organisation",
        select: "SELECT state FROM organisations
                  WHERE organisation_id = $1 AND $2::bigint IS NULL FOR UPDATE",
        update: "UPDATE organisations SET state = $3
                  WHERE organisation_id = $1 AND $2::bigint IS NULL",
        key: (organisation_id, None),
        label: organisation_id.to_string(),
    };
    record.move_to(pool.begin().await?, state).await
}

/// A record with a lifecycle state: what it is, the statements that lock and move it, and its
/// key (`$1`, `$2`).
struct Lifecycle {
    what: &'static str,
    select: &'static str,
    update: &'static str,
    key: (i64, Option<i64>),
    label: String,
}

impl Lifecycle {
    /// Moves the record to `state` in `tx` and announces it; a deleted record stays deleted.
    async fn move_to(
        self,
        mut tx: Transaction<'static, Postgres>,
        state: LifecycleState,
    ) -> Result<Option<LifecycleState>, PgError> {
        let before: Option<(String,)> = sqlx::query_as(self.select)
            .bind(self.key.0)
            .bind(self.key.1)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((before,)) = before else {
            return Ok(None);
        };
        let before = lifecycle(&before)?;
        if before == LifecycleState::Deleted && state != LifecycleState::Deleted {
            return Err(PgError::Conflict {
                what: self.what,
                id: format!("{} (deleted)", self.label),
            });
        }
        sqlx::query(self.update)
            .bind(self.key.0)
            .bind(self.key.1)
            .bind(state_name(state))
            .execute(&mut *tx)
            .await?;
        announce(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(before))
    }
}

/// Moves a tenant (with `namespace`, one of its namespaces) to `state`. A deleted record stays
/// deleted. Answers the state before, `None` when the record does not exist.
///
/// # Errors
/// [`PgError::Conflict`] when the record is deleted and `state` is not;
/// [`PgError::Unavailable`] otherwise.
pub async fn set_state(
    pool: &PgPool,
    tenant_id: TenantId,
    namespace: Option<NamespaceId>,
    state: LifecycleState,
) -> Result<Option<LifecycleState>, PgError> {
    let key = (tenant_id.as_i64(), namespace.map(NamespaceId::as_i64));
    let record = match namespace {
        None => Lifecycle {
            what: "tenant",
            select: "SELECT state FROM tenants
                      WHERE tenant_id = $1 AND $2::bigint IS NULL FOR UPDATE",
            update: "UPDATE tenants SET state = $3 WHERE tenant_id = $1 AND $2::bigint IS NULL",
            key,
            label: tenant_id.to_string(),
        },
        Some(ns) => Lifecycle {
            what: "namespace",
            select: "SELECT state FROM namespaces
                      WHERE tenant_id = $1 AND namespace_id = $2 FOR UPDATE",
            update: "UPDATE namespaces SET state = $3 WHERE tenant_id = $1 AND namespace_id = $2",
            key,
            label: format!("{tenant_id}/{ns}"),
        },
    };
    record
        .move_to(begin_for(pool, tenant_id).await?, state)
        .await
}
