//! gRPC statuses: the one mapping from tool errors (the same kinds MCP reports) and admission
//! refusals to status codes. Every status carries the kind in the `dg-error-kind` metadata; a
//! retryable one carries `google.rpc.RetryInfo` (and `retry-after-ms`) when the wait is known.

use std::time::Duration;

use decision_gate_core::ErrorKind;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use crate::admission::Refusal;
use crate::error::ToolError;

/// The status code of an error kind: the one mapping, exhaustive, so a new kind cannot reach
/// a gRPC client unmapped.
#[must_use]
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidInput | ErrorKind::TooLarge | ErrorKind::InvalidCorrelationId => {
            Code::InvalidArgument
        }
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        // A run too busy to append: the caller may retry the whole call.
        ErrorKind::Conflict => Code::Aborted,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::QuotaExceeded | ErrorKind::RateLimited | ErrorKind::Overloaded => {
            Code::ResourceExhausted
        }
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::IntegrityFailure => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
    }
}

fn with_kind(code: Code, kind: ErrorKind, message: String, retry_after_ms: Option<u64>) -> Status {
    let mut status = match retry_after_ms {
        Some(ms) => Status::with_error_details(
            code,
            message,
            ErrorDetails::with_retry_info(Some(Duration::from_millis(ms))),
        ),
        None => Status::new(code, message),
    };
    status
        .metadata_mut()
        .insert("dg-error-kind", MetadataValue::from_static(kind.as_str()));
    if let Some(ms) = retry_after_ms {
        status
            .metadata_mut()
            .insert("retry-after-ms", MetadataValue::from(ms));
    }
    status
}

/// The status of a failed operation.
#[must_use]
pub fn tool_error(error: ToolError) -> Status {
    let message = match &error.details {
        Some(details) => format!("{} {details}", error.message),
        None => error.message,
    };
    with_kind(code(error.kind), error.kind, message, error.retry_after_ms)
}

/// The status of a request refused before any operation ran.
#[must_use]
pub fn refusal(refusal: &Refusal, challenge: Option<&str>) -> Status {
    let kind = refusal.refusal.kind();
    let code = code(kind);
    let mut status = with_kind(code, kind, refusal.message.clone(), refusal.retry_after_ms);
    if let Some(challenge) = challenge
        .filter(|_| code == Code::Unauthenticated)
        .and_then(|c| MetadataValue::try_from(c).ok())
    {
        status.metadata_mut().insert("www-authenticate", challenge);
    }
    status
}

#[cfg(test)]
mod tests {
    use decision_gate_core::access::AccessRefusal;

    use super::*;

    #[test]
    fn every_kind_maps_to_the_code_a_grpc_client_expects() {
        let cases = [
            ("invalid_input", Code::InvalidArgument),
            ("too_large", Code::InvalidArgument),
            ("invalid_correlation_id", Code::InvalidArgument),
            ("not_found", Code::NotFound),
            ("already_exists", Code::AlreadyExists),
            ("conflict", Code::Aborted),
            ("permission_denied", Code::PermissionDenied),
            ("unauthenticated", Code::Unauthenticated),
            ("quota_exceeded", Code::ResourceExhausted),
            ("rate_limited", Code::ResourceExhausted),
            ("overloaded", Code::ResourceExhausted),
            ("unavailable", Code::Unavailable),
            ("integrity_failure", Code::DataLoss),
            ("internal", Code::Internal),
        ];
        assert_eq!(cases.len(), ErrorKind::ALL.len(), "every kind has a case");
        for kind in ErrorKind::ALL {
            let (_, expected) = cases
                .iter()
                .find(|(name, _)| kind == *name)
                .unwrap_or_else(|| panic!("no case for {kind}"));
            assert_eq!(code(kind), *expected, "{kind}");
        }
    }

    #[test]
    fn a_rate_limit_carries_retry_info_and_the_kind() {
        let status = refusal(
            &Refusal {
                retry_after_ms: Some(1500),
                ..Refusal::new(AccessRefusal::RateLimited, "rate limit exceeded")
            },
            None,
        );
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.metadata().get("dg-error-kind").unwrap(),
            "rate_limited"
        );
        assert_eq!(status.metadata().get("retry-after-ms").unwrap(), "1500");
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_millis(1500)));
    }
}
