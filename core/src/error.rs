//! The service's error: one enum, its variants named by what the caller can do about them.

use crate::access::{AuditError, AuthzError, QuotaRefusal, UsageError};
use crate::engine::SpecError;
use crate::store::StoreError;

/// The stable, machine-readable kind of every failure a caller can see, on every transport:
/// MCP's `kind`, gRPC's `dg-error-kind`, the audit trail's outcome. The list grows with the
/// product; each transport maps it in one exhaustive `match`, so a new kind cannot reach a
/// caller unmapped (the enum is deliberately not `#[non_exhaustive]`, which would force a
/// wildcard arm there; ADR 0011).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// A request field is invalid.
    InvalidInput,
    /// A request or field is over its size limit.
    TooLarge,
    /// The resource does not exist or is outside the caller's scope.
    NotFound,
    /// The id is taken by something different.
    AlreadyExists,
    /// The request contradicts recorded state.
    Conflict,
    /// The caller lacks a permission.
    PermissionDenied,
    /// No or wrong credentials.
    Unauthenticated,
    /// A quota is exhausted.
    QuotaExceeded,
    /// The caller exceeded its request rate.
    RateLimited,
    /// The server has too many requests in flight.
    Overloaded,
    /// The client's correlation id is malformed.
    InvalidCorrelationId,
    /// A backend is unreachable.
    Unavailable,
    /// Stored data failed an integrity check.
    IntegrityFailure,
    /// A defect: the call succeeded or failed in a way the server cannot express.
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [Self; 14] = [
        Self::InvalidInput,
        Self::TooLarge,
        Self::NotFound,
        Self::AlreadyExists,
        Self::Conflict,
        Self::PermissionDenied,
        Self::Unauthenticated,
        Self::QuotaExceeded,
        Self::RateLimited,
        Self::Overloaded,
        Self::InvalidCorrelationId,
        Self::Unavailable,
        Self::IntegrityFailure,
        Self::Internal,
    ];

    /// The wire name (`invalid_input`, `not_found`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::TooLarge => "too_large",
            Self::NotFound => "not_found",
            Self::AlreadyExists => "already_exists",
            Self::Conflict => "conflict",
            Self::PermissionDenied => "permission_denied",
            Self::Unauthenticated => "unauthenticated",
            Self::QuotaExceeded => "quota_exceeded",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::InvalidCorrelationId => "invalid_correlation_id",
            Self::Unavailable => "unavailable",
            Self::IntegrityFailure => "integrity_failure",
            Self::Internal => "internal",
        }
    }

    /// Whether the same call may succeed later.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::QuotaExceeded | Self::RateLimited | Self::Overloaded | Self::Unavailable
        )
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

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
    /// A quota is exhausted; wait for its reset or raise it.
    #[error("{0}")]
    QuotaExceeded(QuotaRefusal),
    /// The caller or its tenant sends faster than its rate limit; wait `retry_after_ms`.
    #[error("rate limit exceeded for the {}; retry in {retry_after_ms} ms", scope.as_str())]
    RateLimited {
        /// Whose rate.
        scope: crate::access::RateScope,
        /// How long to wait.
        retry_after_ms: u64,
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
    /// The stable kind transports expose.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidSpec(_) | Self::InvalidInput { .. } => ErrorKind::InvalidInput,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Conflict(_) => ErrorKind::Conflict,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::QuotaExceeded(_) => ErrorKind::QuotaExceeded,
            Self::RateLimited { .. } => ErrorKind::RateLimited,
            Self::Unavailable(_) => ErrorKind::Unavailable,
            Self::Corrupt(_) => ErrorKind::IntegrityFailure,
        }
    }

    /// How long the caller should wait before retrying, when the error says.
    #[must_use]
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::QuotaExceeded(refusal) => refusal.retry_after_ms,
            Self::RateLimited { retry_after_ms, .. } => Some(*retry_after_ms),
            _ => None,
        }
    }

    /// Whether retrying the same call later may succeed.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
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
            StoreError::QuotaExceeded(refusal) => Self::QuotaExceeded(refusal),
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
            UsageError::QuotaExceeded(refusal) => Self::QuotaExceeded(refusal),
            UsageError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<crate::access::RateError> for Error {
    fn from(e: crate::access::RateError) -> Self {
        match e {
            crate::access::RateError::Limited {
                scope,
                retry_after_ms,
            } => Self::RateLimited {
                scope,
                retry_after_ms,
            },
            crate::access::RateError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

impl From<AuditError> for Error {
    fn from(e: AuditError) -> Self {
        Self::Unavailable(e.to_string())
    }
}
