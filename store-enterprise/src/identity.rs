//! API keys at rest (migration 5): their scope, roles, keyed hash and lifetime. The key format,
//! the pepper and the hash are the enterprise server's; this module stores what it is given
//! and answers, by the database's one clock, whether a key is usable, so every replica agrees
//! on when a key expired or was revoked.

use decision_gate_core::ids::{NamespaceId, TenantId};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use crate::codec::{stored_namespace, stored_tenant};
use crate::error::PgError;
use crate::tenancy::announce;

/// The longest page of keys one listing returns.
pub const MAX_KEY_PAGE: u32 = 500;

/// What a key may reach: an organisation, optionally narrowed to one tenant and one of its
/// namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyScope {
    /// The organisation.
    pub organisation_id: i64,
    /// The only tenant, or every tenant of the organisation when `None`.
    pub tenant_id: Option<TenantId>,
    /// The only namespace of that tenant, or all when `None`.
    pub namespace_id: Option<NamespaceId>,
}

impl KeyScope {
    /// The scope stored as an organisation, tenant and namespace column; `None` when an id is
    /// out of range (a corrupt row).
    pub(crate) fn from_columns(
        organisation_id: i64,
        tenant: Option<i64>,
        namespace: Option<i64>,
    ) -> Option<Self> {
        let tenant_id = match tenant {
            Some(t) => Some(stored_tenant(t)?),
            None => None,
        };
        let namespace_id = match namespace {
            Some(n) => Some(stored_namespace(n)?),
            None => None,
        };
        Some(Self {
            organisation_id,
            tenant_id,
            namespace_id,
        })
    }
}

/// A key to store: its id, scope, roles and the keyed hash of its secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiKey {
    /// 16 lower-case hex digits.
    pub key_id: String,
    /// What it may reach.
    pub scope: KeyScope,
    /// Role names (checked by the caller against its roles; the database checks the names).
    pub roles: Vec<String>,
    /// A name for people.
    pub name: String,
    /// 64 lower-case hex digits.
    pub secret_hash: String,
    /// The subject that created it.
    pub created_by: String,
    /// Seconds until it expires, if it does.
    pub expires_in_s: Option<i64>,
}

/// A stored key, never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// Its id.
    pub key_id: String,
    /// What it may reach.
    pub scope: KeyScope,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its name.
    pub name: String,
    /// The keyed hash of its secret, hex.
    #[serde(skip)]
    pub secret_hash: String,
    /// Who created it.
    pub created_by: String,
    /// When, unix seconds.
    pub created_at: i64,
    /// When it expires (or expired), unix seconds.
    pub expires_at: Option<i64>,
    /// When it was revoked, unix seconds.
    pub revoked_at: Option<i64>,
    /// The key it replaced by rotation.
    pub replaces: Option<String>,
    /// Neither revoked nor expired, by the database's clock when read.
    pub usable: bool,
}

const SELECT_KEY: &str = "SELECT key_id, organisation_id, scope_tenant, scope_namespace, roles,
        name, secret_hash, created_by, extract(epoch FROM created_at)::bigint,
        extract(epoch FROM expires_at)::bigint, extract(epoch FROM revoked_at)::bigint, replaces,
        (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now()))
   FROM api_keys";

type KeyRow = (
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Vec<String>,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    bool,
);

fn record(row: KeyRow) -> Result<ApiKeyRecord, PgError> {
    let (
        key_id,
        organisation_id,
        tenant,
        namespace,
        roles,
        name,
        secret_hash,
        created_by,
        created_at,
        expires_at,
        revoked_at,
        replaces,
        usable,
    ) = row;
    let scope = KeyScope::from_columns(organisation_id, tenant, namespace).ok_or_else(|| {
        PgError::Unavailable(format!(
            "api key {key_id}: a stored scope id is out of range"
        ))
    })?;
    Ok(ApiKeyRecord {
        scope,
        key_id,
        roles,
        name,
        secret_hash,
        created_by,
        created_at,
        expires_at,
        revoked_at,
        replaces,
        usable,
    })
}

fn check_new(key: &NewApiKey) -> Result<(), PgError> {
    if key.scope.namespace_id.is_some() && key.scope.tenant_id.is_none() {
        return Err(PgError::Invalid {
            field: "namespace_id",
            message: "a namespace needs its tenant_id".to_owned(),
        });
    }
    if key.name.is_empty() || key.name.len() > 256 || key.name.chars().any(char::is_control) {
        return Err(PgError::Invalid {
            field: "name",
            message: "must be 1 to 256 bytes without control characters".to_owned(),
        });
    }
    if let Some(seconds) = key.expires_in_s
        && !(1..=MAX_KEY_LIFETIME_S).contains(&seconds)
    {
        return Err(PgError::Invalid {
            field: "expires_in_s",
            message: format!("must be between 1 and {MAX_KEY_LIFETIME_S} seconds, got {seconds}"),
        });
    }
    Ok(())
}

/// The longest lifetime a key can be given: ten years.
pub const MAX_KEY_LIFETIME_S: i64 = 10 * 366 * 24 * 3600;

/// Maps a foreign-key violation to a missing organisation, tenant or namespace.
fn missing_scope(scope: KeyScope) -> impl FnOnce(sqlx::Error) -> PgError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            let id = match (scope.tenant_id, scope.namespace_id) {
                (Some(t), Some(n)) => format!("{t}/{n} in organisation {}", scope.organisation_id),
                (Some(t), None) => format!("{t} in organisation {}", scope.organisation_id),
                _ => scope.organisation_id.to_string(),
            };
            let what = match (scope.tenant_id, scope.namespace_id) {
                (_, Some(_)) => "namespace",
                (Some(_), None) => "tenant",
                _ => "organisation",
            };
            PgError::MissingParent { what, id }
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => PgError::Conflict {
            what: "api key",
            id: "with this id".to_owned(),
        },
        _ => e.into(),
    }
}

async fn insert(
    tx: &mut Transaction<'static, Postgres>,
    key: &NewApiKey,
    replaces: Option<&str>,
) -> Result<ApiKeyRecord, PgError> {
    let row: KeyRow = sqlx::query_as(&format!(
        "WITH k AS (
            INSERT INTO api_keys (key_id, organisation_id, scope_tenant, scope_namespace, roles,
                                  name, secret_hash, created_by, expires_at, replaces)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                    now() + make_interval(secs => $9::bigint), $10)
            RETURNING *)
         {}",
        SELECT_KEY.replace("FROM api_keys", "FROM k")
    ))
    .bind(&key.key_id)
    .bind(key.scope.organisation_id)
    .bind(key.scope.tenant_id.map(TenantId::as_i64))
    .bind(key.scope.namespace_id.map(NamespaceId::as_i64))
    .bind(&key.roles)
    .bind(&key.name)
    .bind(&key.secret_hash)
    .bind(&key.created_by)
    .bind(key.expires_in_s)
    .bind(replaces)
    .fetch_one(&mut **tx)
    .await
    .map_err(missing_scope(key.scope))?;
    record(row)
}

/// Stores a new key.
///
/// # Errors
/// [`PgError::Invalid`] for a bad name, lifetime or scope; [`PgError::MissingParent`] when the
/// organisation, tenant or namespace does not exist (or the tenant is in another organisation);
/// [`PgError::Unavailable`] otherwise.
pub async fn create_api_key(pool: &PgPool, key: &NewApiKey) -> Result<ApiKeyRecord, PgError> {
    check_new(key)?;
    let mut tx = pool.begin().await?;
    let stored = insert(&mut tx, key, None).await?;
    tx.commit().await?;
    Ok(stored)
}

/// The key with this id, if it exists.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn api_key(pool: &PgPool, key_id: &str) -> Result<Option<ApiKeyRecord>, PgError> {
    let row: Option<KeyRow> = sqlx::query_as(&format!("{SELECT_KEY} WHERE key_id = $1"))
        .bind(key_id)
        .fetch_optional(pool)
        .await?;
    row.map(record).transpose()
}

/// One page of an organisation's keys (of one tenant when `tenant` is given), in key id order
/// after `after`, at most `limit` (1..=[`MAX_KEY_PAGE`]).
///
/// # Errors
/// [`PgError::Invalid`] for a limit out of range; [`PgError::Unavailable`] otherwise.
pub async fn list_api_keys(
    pool: &PgPool,
    organisation_id: i64,
    tenant: Option<TenantId>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<ApiKeyRecord>, PgError> {
    if !(1..=MAX_KEY_PAGE).contains(&limit) {
        return Err(PgError::Invalid {
            field: "limit",
            message: format!("must be between 1 and {MAX_KEY_PAGE}, got {limit}"),
        });
    }
    let rows: Vec<KeyRow> = sqlx::query_as(&format!(
        "{SELECT_KEY} WHERE organisation_id = $1
            AND ($2::bigint IS NULL OR scope_tenant = $2)
            AND ($3::text IS NULL OR key_id > $3)
          ORDER BY key_id LIMIT $4"
    ))
    .bind(organisation_id)
    .bind(tenant.map(TenantId::as_i64))
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(record).collect()
}

/// Revokes a key (a second revocation keeps the first time) and answers it as it now is, or
/// `None` when no key has this id.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn revoke_api_key(pool: &PgPool, key_id: &str) -> Result<Option<ApiKeyRecord>, PgError> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE key_id = $1",
    )
    .bind(key_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let row: Option<KeyRow> = if updated == 1 {
        announce(&mut *tx).await?;
        sqlx::query_as(&format!("{SELECT_KEY} WHERE key_id = $1"))
            .bind(key_id)
            .fetch_optional(&mut *tx)
            .await?
    } else {
        None
    };
    tx.commit().await?;
    row.map(record).transpose()
}

/// What a rotation creates beside the old key's organisation, tenant, namespace, roles and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Successor {
    /// 16 lower-case hex digits.
    pub key_id: String,
    /// 64 lower-case hex digits.
    pub secret_hash: String,
    /// The subject that rotated the key.
    pub created_by: String,
    /// Seconds until it expires, if it does.
    pub expires_in_s: Option<i64>,
}

/// Replaces a usable key by a successor with the same organisation, tenant, namespace, roles
/// and name, and ends the old one `overlap_s` seconds from now (or earlier, if it was to expire
/// sooner), in one transaction. Answers the old key as it now is and the new one.
///
/// # Errors
/// [`PgError::MissingParent`] when no key has `old_key_id`; [`PgError::Invalid`] when it is
/// revoked or expired, or `overlap_s` is negative or over a day; [`PgError::Unavailable`]
/// otherwise.
pub async fn rotate_api_key(
    pool: &PgPool,
    old_key_id: &str,
    successor: &Successor,
    overlap_s: i64,
) -> Result<(ApiKeyRecord, ApiKeyRecord), PgError> {
    if !(0..=MAX_OVERLAP_S).contains(&overlap_s) {
        return Err(PgError::Invalid {
            field: "overlap_s",
            message: format!("must be between 0 and {MAX_OVERLAP_S} seconds, got {overlap_s}"),
        });
    }
    let mut tx = pool.begin().await?;
    let old: Option<KeyRow> = sqlx::query_as(&format!("{SELECT_KEY} WHERE key_id = $1 FOR UPDATE"))
        .bind(old_key_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(old) = old.map(record).transpose()? else {
        return Err(PgError::MissingParent {
            what: "api key",
            id: old_key_id.to_owned(),
        });
    };
    if !old.usable {
        return Err(PgError::Invalid {
            field: "key_id",
            message: format!("api key {old_key_id} is revoked or expired; create a new one"),
        });
    }
    let new = NewApiKey {
        key_id: successor.key_id.clone(),
        scope: old.scope,
        roles: old.roles.clone(),
        name: old.name.clone(),
        secret_hash: successor.secret_hash.clone(),
        created_by: successor.created_by.clone(),
        expires_in_s: successor.expires_in_s,
    };
    check_new(&new)?;
    let created = insert(&mut tx, &new, Some(old_key_id)).await?;
    sqlx::query(
        "UPDATE api_keys
            SET expires_at = LEAST(coalesce(expires_at, 'infinity'),
                                   now() + make_interval(secs => $2::bigint))
          WHERE key_id = $1",
    )
    .bind(old_key_id)
    .bind(overlap_s)
    .execute(&mut *tx)
    .await?;
    let ended: KeyRow = sqlx::query_as(&format!("{SELECT_KEY} WHERE key_id = $1"))
        .bind(old_key_id)
        .fetch_one(&mut *tx)
        .await?;
    announce(&mut *tx).await?;
    tx.commit().await?;
    Ok((record(ended)?, created))
}

/// The longest overlap a rotation grants the old key: one day.
pub const MAX_OVERLAP_S: i64 = 24 * 3600;

/// Creates the first owner key of an organisation (creating the organisation when it does not
/// exist), unless it already has a usable organisation-wide `org_owner` key. Concurrent calls
/// queue on the organisation's row, so exactly one of them creates a key.
///
/// # Errors
/// [`PgError::Exists`] when an owner key exists; [`PgError::Invalid`] for a bad id, name or key;
/// [`PgError::Unavailable`] otherwise.
pub async fn bootstrap_owner_key(
    owner: &PgPool,
    organisation_name: &str,
    key: &NewApiKey,
) -> Result<ApiKeyRecord, PgError> {
    check_new(key)?;
    let organisation_id = key.scope.organisation_id;
    crate::create_organisation(owner, organisation_id, organisation_name).await?;
    let mut tx = owner.begin().await?;
    sqlx::query("SELECT 1 FROM organisations WHERE organisation_id = $1 FOR UPDATE")
        .bind(organisation_id)
        .execute(&mut *tx)
        .await?;
    let (owners,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM api_keys
          WHERE organisation_id = $1 AND scope_tenant IS NULL AND 'org_owner' = ANY (roles)
            AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(organisation_id)
    .fetch_one(&mut *tx)
    .await?;
    if owners > 0 {
        return Err(PgError::Exists(format!(
            "a usable owner key of organisation {organisation_id}"
        )));
    }
    let stored = insert(&mut tx, key, None).await?;
    tx.commit().await?;
    Ok(stored)
}
