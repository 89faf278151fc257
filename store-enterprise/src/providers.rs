//! Identity providers at rest (migration 7): the settings of the OpenID providers an
//! organisation trusts, set through the admin API. The settings document is the server's; this
//! module stores it and keeps an issuer to one organisation.

use sqlx::postgres::PgPool;

use crate::error::PgError;
use crate::tenancy::announce;

/// The most identity providers the table may hold (in all organisations).
pub const MAX_STORED_PROVIDERS: i64 = 1024;

/// A stored provider: its issuer, organisation and settings document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredProvider {
    /// The issuer identifier.
    pub issuer: String,
    /// The organisation it speaks for.
    pub organisation_id: i64,
    /// Its settings, JSON.
    pub settings_json: String,
}

/// Creates or replaces the settings of `issuer` for `organisation_id`.
///
/// # Errors
/// [`PgError::Conflict`] when the issuer speaks for another organisation;
/// [`PgError::Invalid`] when the table is full; [`PgError::MissingParent`] for an
/// organisation that does not exist; [`PgError::Unavailable`] otherwise.
pub async fn put_provider(
    pool: &PgPool,
    provider: &StoredProvider,
    updated_by: &str,
) -> Result<(), PgError> {
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE identity_providers IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (count, exists): (i64, bool) =
        sqlx::query_as("SELECT count(*), bool_or(issuer = $1) IS TRUE FROM identity_providers")
            .bind(&provider.issuer)
            .fetch_one(&mut *tx)
            .await?;
    if !exists && count >= MAX_STORED_PROVIDERS {
        return Err(PgError::Invalid {
            field: "issuer",
            message: format!("{count} identity providers are stored, the most allowed"),
        });
    }
    let written = sqlx::query(
        "INSERT INTO identity_providers (issuer, organisation_id, settings_json, updated_by)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (issuer) DO UPDATE
            SET settings_json = EXCLUDED.settings_json, updated_by = EXCLUDED.updated_by,
                updated_at = now()
          WHERE identity_providers.organisation_id = EXCLUDED.organisation_id",
    )
    .bind(&provider.issuer)
    .bind(provider.organisation_id)
    .bind(&provider.settings_json)
    .bind(updated_by)
    .execute(&mut *tx)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            PgError::MissingParent {
                what: "organisation",
                id: provider.organisation_id.to_string(),
            }
        }
        _ => e.into(),
    })?
    .rows_affected();
    if written == 0 {
        return Err(PgError::Conflict {
            what: "identity provider",
            id: provider.issuer.clone(),
        });
    }
    announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes `issuer` from `organisation_id`'s providers; whether it was there.
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn delete_provider(
    pool: &PgPool,
    organisation_id: i64,
    issuer: &str,
) -> Result<bool, PgError> {
    let mut tx = pool.begin().await?;
    let deleted =
        sqlx::query("DELETE FROM identity_providers WHERE issuer = $1 AND organisation_id = $2")
            .bind(issuer)
            .bind(organisation_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Every stored provider (at most [`MAX_STORED_PROVIDERS`]).
///
/// # Errors
/// [`PgError::Unavailable`] when the database cannot be reached.
pub async fn stored_providers(pool: &PgPool) -> Result<Vec<StoredProvider>, PgError> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT issuer, organisation_id, settings_json FROM identity_providers
          ORDER BY issuer LIMIT $1",
    )
    .bind(MAX_STORED_PROVIDERS)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(issuer, organisation_id, settings_json)| StoredProvider {
            issuer,
            organisation_id,
            settings_json,
        })
        .collect())
}
