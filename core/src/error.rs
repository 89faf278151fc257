//! The service's error: one enum, its variants named by what the caller can do about them.

use crate::access::{AuditError, AuthzError, UsageError, UsageMetric};
use crate::engine::SpecError;
use crate::store::StoreError;

/// Why a service call failed. [`Error::kind`] is the stable machine-readable name transports
/// expose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The scenario spec breaks define-time rules; fix every listed path.
    #[error("invalid scenario spec: {}", summarize(.0))]
    InvalidSpec(Vec<SpecError>),
    /// A request field is invalid; fix it.
    #[error("{field}: {message}")]
    InvalidInput {
        /// The field, as a JSON path.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A request field is over its size limit; send less.
    #[error("{field} is {actual} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// The field.
        field: String,
        /// The limit in bytes.
        limit: usize,
        /// The size sent.
        actual: usize,
    },
    /// The resource does not exist, or is outside the caller's scope (indistinguishable).
    #[error("{what} not found: {id}")]
    NotFound {
        /// What kind of resource.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The id is taken by something different; choose another id.
    #[error("{what} {id} already exists")]
    AlreadyExists {
        /// What kind of resource.
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The request contradicts recorded state (a submission id reused with another payload, a
    /// run too busy to append); read the current state before retrying.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller lacks the permission; ask for it.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A quota is exhausted; wait or raise it.
    #[error("quota exceeded for {metric:?} (limit {limit})")]
    QuotaExceeded {
        /// The metric.
        metric: UsageMetric,
        /// The quota.
        limit: u64,
        /// When to retry.
        retry_after_ms: Option<u64>,
    },
    /// A backend is unreachable; retry later. Nothing was written.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed an integrity check; the service refuses to act on it.
    #[error("integrity failure: {0}")]
    Corrupt(String),
}

fn summarize(errors: &[SpecError]) -> String {
    match errors {
        [] => "no details".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

impl Error {
    /// The stable kind transports expose (`invalid_input`, `not_found`, ...).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) | Self::InvalidInput { .. } => "invalid_input",
            Self::TooLarge { .. } => "too_large",
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Conflict(_) => "conflict",
            Self::PermissionDenied(_) => "permission_denied",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unavailable(_) => "unavailable",
            Self::Corrupt(_) => "integrity_failure",
        }
    }

    /// Whether retrying the same call later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::QuotaExceeded { .. })
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists { what, id } => Self::AlreadyExists { what, id },
            StoreError::RevisionConflict { .. } | StoreError::DuplicateKey { .. } => {
                Self::Conflict(e.to_string())
            }
            StoreError::Invalid { field, message } => Self::InvalidInput {
                field: field.to_owned(),
                message,
            },
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::Corrupt(m) => Self::Corrupt(m),
        }
    }
}

impl From<AuthzError> for Error {
    fn from(e: AuthzError) -> Self {
        match e {
            AuthzError::Denied(reason) => Self::PermissionDenied(reason),
            // Reported exactly as a missing resource; the caller fills in what and id.
            AuthzError::OutOfScope => Self::NotFound {
                what: "resource",
                id: String::new(),
            },
            AuthzError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::QuotaExceeded {
                metric,
                limit,
                retry_after_ms,
            } => Self::QuotaExceeded {
                metric,
                limit,
                retry_after_ms,
            },
            UsageError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<AuditError> for Error {
    fn from(e: AuditError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
