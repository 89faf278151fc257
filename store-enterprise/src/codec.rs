//! Stored documents, cursors and the mapping of database errors to [`StoreError`].
//!
//! Documents are written byte for byte as serialised, with the SHA-256 of those bytes; every
//! read checks it and refuses a mismatch as `Corrupt` (fail closed), as the SQLite backend does.
//! Cursors have the same shapes as the core's backends: the last scenario id, or the JSON pair
//! `[schema_id, version]`.

use decision_gate_core::hashing::{HashAlgorithm, HashDigest};
use decision_gate_core::ids::ScenarioId;
use decision_gate_core::spec::ScenarioSpec;
use decision_gate_core::store::{DataShapeRecord, Page, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A document and the SHA-256 of its bytes.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<(String, String), StoreError> {
    let json = serde_json::to_string(value).map_err(|e| StoreError::Invalid {
        field: "document",
        message: e.to_string(),
    })?;
    let sha = sha256(&json);
    Ok((json, sha))
}

fn sha256(text: &str) -> String {
    HashAlgorithm::Sha256.digest(text.as_bytes()).value
}

/// Checks a stored document against its SHA-256 and parses it.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &str,
    json: &str,
    sha: &str,
) -> Result<T, StoreError> {
    if sha256(json) != sha {
        return Err(StoreError::Corrupt(format!("{what}: checksum mismatch")));
    }
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The checksum of a scenario row: it covers both the spec hash and the spec.
pub(crate) fn scenario_checksum(hash_json: &str, spec_json: &str) -> String {
    sha256(&format!("{hash_json}\n{spec_json}"))
}

/// Checks a scenario row against its checksum and parses it.
pub(crate) fn decode_scenario(
    hash_json: &str,
    spec_json: &str,
    sha: &str,
) -> Result<(ScenarioSpec, HashDigest), StoreError> {
    if scenario_checksum(hash_json, spec_json) != sha {
        return Err(StoreError::Corrupt("scenario: checksum mismatch".into()));
    }
    let spec = serde_json::from_str(spec_json)
        .map_err(|e| StoreError::Corrupt(format!("scenario: {e}")))?;
    let hash = serde_json::from_str(hash_json)
        .map_err(|e| StoreError::Corrupt(format!("scenario hash: {e}")))?;
    Ok((spec, hash))
}

fn invalid_cursor() -> StoreError {
    StoreError::Invalid {
        field: "cursor",
        message: "not a cursor issued by this store".to_owned(),
    }
}

/// Parses a scenario cursor: the last scenario id returned.
pub(crate) fn parse_scenario_cursor(cursor: &str) -> Result<ScenarioId, StoreError> {
    ScenarioId::new(cursor).map_err(|_| invalid_cursor())
}

/// The cursor of a schema page: the last (schema_id, version) returned.
pub(crate) fn schema_cursor(record: &DataShapeRecord) -> String {
    serde_json::json!([record.schema_id, record.version]).to_string()
}

/// Parses a schema cursor.
pub(crate) fn parse_schema_cursor(cursor: &str) -> Result<(String, String), StoreError> {
    serde_json::from_str::<(String, String)>(cursor).map_err(|_| invalid_cursor())
}

/// Builds a page from up to `limit + 1` items in key order; the extra item only says that
/// another page follows.
pub(crate) fn page_from<T>(
    mut items: Vec<T>,
    limit: u32,
    cursor_of: impl Fn(&T) -> String,
) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_token = if more {
        items.last().map(cursor_of)
    } else {
        None
    };
    Page { items, next_token }
}

/// A `u64` for a `bigint` column.
pub(crate) fn to_i64(field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Invalid {
        field,
        message: format!("{value} is above the largest storable value {}", i64::MAX),
    })
}

/// The SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The constraint a database error names, if any.
pub(crate) fn constraint(e: &sqlx::Error) -> Option<&str> {
    match e {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Whether `e` is a unique violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    sqlstate(e).as_deref() == Some("23505")
}

/// Maps a database error of an operation in `scope` (tenant, namespace).
///
/// A missing parent row (foreign key) means the namespace was never provisioned; a row-level
/// security refusal means a record (an effect) named another tenant than the operation.
/// Everything else — connection loss, pool timeouts, server shutdown, serialisation failures,
/// missing privileges — is `Unavailable`: retryable, and nothing was committed.
pub(crate) fn store_error(e: sqlx::Error, scope: (i64, i64)) -> StoreError {
    match sqlstate(&e).as_deref() {
        Some("23503") => StoreError::Invalid {
            field: "namespace_id",
            message: format!(
                "namespace {} does not exist in tenant {} (provision it first)",
                scope.1, scope.0
            ),
        },
        Some("42501") if e.to_string().contains("row-level security") => StoreError::Invalid {
            field: "tenant_id",
            message: format!(
                "a record for another tenant cannot be written in tenant {}",
                scope.0
            ),
        },
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Maps an error where no scope applies (pool checks).
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
