//! The mapping of database values and errors to the storage seam's types. Stored documents and
//! page cursors are the core's (`decision_gate_core::store::codec`), shared with the SQLite
//! backend, so a cursor or a checksum means the same on every backend.

use decision_gate_core::access::QuotaRefusal;
use decision_gate_core::ids::{NamespaceId, TenantId};
use decision_gate_core::store::StoreError;

/// A tenant id read back from a `bigint` column; `None` when it is out of range (a corrupt row).
pub(crate) fn stored_tenant(value: i64) -> Option<TenantId> {
    u64::try_from(value)
        .ok()
        .and_then(|v| TenantId::new(v).ok())
}

/// A namespace id read back from a `bigint` column; `None` when it is out of range.
pub(crate) fn stored_namespace(value: i64) -> Option<NamespaceId> {
    u64::try_from(value)
        .ok()
        .and_then(|v| NamespaceId::new(v).ok())
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
    if let Some(refusal) = quota_refusal(&e) {
        return StoreError::QuotaExceeded(refusal);
    }
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

/// The refusal a quota raised (SQLSTATE `DGQ01`, migration 8), if `e` is one.
pub(crate) fn quota_refusal(e: &sqlx::Error) -> Option<QuotaRefusal> {
    if sqlstate(e).as_deref() != Some(QUOTA_EXCEEDED) {
        return None;
    }
    let detail = e
        .as_database_error()?
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?
        .detail()?;
    serde_json::from_str(detail).ok()
}

/// The SQLSTATE `dg_consume_quota` raises.
const QUOTA_EXCEEDED: &str = "DGQ01";

/// Maps an error where no scope applies (pool checks).
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}
