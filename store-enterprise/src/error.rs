//! Errors of the administrative paths (migrations, schema check, tenancy administration,
//! integrity scan). The seam methods answer [`StoreError`](decision_gate_core::store::StoreError).

/// A failure outside the storage seams.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database cannot be reached or answered with an error; retry or fix the connection.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has migrations this binary does not know, or one it knows with other
    /// contents: an older binary must not serve a newer schema.
    #[error("database schema is not one this binary understands: {0}")]
    UnknownSchema(String),
    /// Migrations this binary needs are not applied yet.
    #[error("database schema is behind this binary: {0}")]
    SchemaBehind(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The connection's role may bypass row-level security; the store refuses to use it.
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
    /// An argument is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A record exists with different contents.
    #[error("{what} {id} already exists with different attributes")]
    Conflict {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// A record that may exist only once exists already (an organisation's first owner).
    #[error("{0} exists already")]
    Exists(String),
    /// The parent of a record does not exist.
    #[error("{what} {id} does not exist")]
    MissingParent {
        /// What kind of record.
        what: &'static str,
        /// Its id.
        id: String,
    },
}

impl From<sqlx::Error> for PgError {
    fn from(e: sqlx::Error) -> Self {
        Self::Unavailable(e.to_string())
    }
}
