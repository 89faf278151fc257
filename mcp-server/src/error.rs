//! Tool failures: the one mapping from service errors to MCP `isError` results.

use decision_gate_core::{Error, ErrorKind};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

/// A failed tool call as the caller sees it: a stable `kind`, a message and, where waiting
/// helps, how long to wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError {
    /// The stable kind (`invalid_input`, `not_found`, `permission_denied`, ...).
    pub kind: ErrorKind,
    /// What went wrong, naming the field where there is one.
    pub message: String,
    /// Whether the same call may succeed later.
    pub retryable: bool,
    /// How long to wait before retrying, when known.
    pub retry_after_ms: Option<u64>,
    /// Every broken rule of an invalid spec, with its JSON path.
    pub details: Option<Value>,
    /// Whether the service already audited the failure (false for calls refused before they
    /// reached it).
    pub audited: bool,
    /// The service's own text of an `unavailable`, `integrity_failure` or `internal` error,
    /// which can carry a storage driver's message (hosts, users, files): logged with the
    /// request's ids ([`crate::handler::Shared::record`]), never sent to the caller, who gets a
    /// stable message.
    pub withheld: Option<String>,
}

impl ToolError {
    /// Arguments that do not match the tool's input schema.
    pub(crate) fn invalid_arguments(path: &str, message: impl std::fmt::Display) -> Self {
        let at = if path.is_empty() || path == "." {
            String::new()
        } else {
            format!("{path}: ")
        };
        Self {
            kind: ErrorKind::InvalidInput,
            message: format!("invalid arguments: {at}{message}"),
            retryable: false,
            retry_after_ms: None,
            details: None,
            audited: false,
            withheld: None,
        }
    }

    /// A result that could not be serialised; the service call itself succeeded.
    pub(crate) fn internal(message: impl std::fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.to_string(),
            retryable: false,
            retry_after_ms: None,
            details: None,
            audited: false,
            withheld: None,
        }
    }

    /// A bound on what one caller may hold open is reached (retry once one closes).
    pub(crate) fn rate_limited(message: String) -> Self {
        Self {
            kind: ErrorKind::RateLimited,
            retryable: true,
            retry_after_ms: Some(1000),
            ..Self::internal(message)
        }
    }

    /// A bound on what the whole server holds open is reached (retry once one closes).
    pub(crate) fn overloaded(message: String) -> Self {
        Self {
            kind: ErrorKind::Overloaded,
            retryable: true,
            retry_after_ms: Some(1000),
            ..Self::internal(message)
        }
    }

    /// An argument the tool refuses though it matches the schema.
    pub(crate) fn unsupported(field: &str, message: &str) -> Self {
        Self::invalid_arguments(field, message)
    }

    /// The `isError` result: the error as `structuredContent` and as text.
    #[must_use]
    pub fn into_result(self) -> CallToolResult {
        let mut error = json!({
            "kind": self.kind.as_str(),
            "message": self.message,
            "retryable": self.retryable,
        });
        if let Some(ms) = self.retry_after_ms {
            error["retry_after_ms"] = json!(ms);
        }
        if let Some(details) = self.details {
            error["details"] = details;
        }
        let text = format!("{}: {}", self.kind, self.message);
        let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
        result.structured_content = Some(json!({ "error": error }));
        result
    }
}

impl From<Error> for ToolError {
    fn from(error: Error) -> Self {
        let retry_after_ms = error.retry_after_ms();
        let details = match &error {
            Error::InvalidSpec(errors) => Some(
                errors
                    .iter()
                    .map(|e| json!({ "path": e.path, "rule": e.rule }))
                    .collect(),
            ),
            Error::QuotaExceeded(refusal) => serde_json::to_value(refusal).ok(),
            _ => None,
        };
        let kind = error.kind();
        let (message, withheld) = match kind {
            ErrorKind::Unavailable => (
                "a storage or backend service is unavailable; retry later".to_owned(),
                Some(error.to_string()),
            ),
            ErrorKind::IntegrityFailure => (
                "stored data failed an integrity check; the server log has the details".to_owned(),
                Some(error.to_string()),
            ),
            ErrorKind::Internal => (
                "internal error; the server log has the details".to_owned(),
                Some(error.to_string()),
            ),
            _ => (error.to_string(), None),
        };
        Self {
            kind,
            message,
            retryable: error.is_retryable(),
            retry_after_ms,
            details,
            audited: true,
            withheld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_errors_carry_their_wait_and_are_retryable() {
        let error = ToolError::from(Error::QuotaExceeded(
            decision_gate_core::access::QuotaRefusal {
                metric: decision_gate_core::access::UsageMetric::ToolCalls,
                period: decision_gate_core::access::QuotaPeriod::Day,
                limit: 10,
                used: 10,
                reset_at_ms: Some(86_400_000),
                retry_after_ms: Some(1500),
            },
        ));
        let result = error.into_result();
        assert_eq!(result.is_error, Some(true));
        let structured = result.structured_content.unwrap();
        assert_eq!(structured["error"]["kind"], "quota_exceeded");
        assert_eq!(structured["error"]["retry_after_ms"], 1500);
        assert_eq!(structured["error"]["retryable"], true);
        let details = &structured["error"]["details"];
        assert_eq!(details["metric"], "tool_calls");
        assert_eq!(details["period"], "day");
        assert_eq!(
            (&details["limit"], &details["used"]),
            (&json!(10), &json!(10))
        );
        assert_eq!(details["reset_at_ms"], 86_400_000);
    }

    #[test]
    fn backend_text_is_withheld_from_the_caller() {
        let driver = "connection to host db.internal:5432 as user dg_app refused";
        for error in [
            Error::Unavailable(driver.into()),
            Error::Corrupt(driver.into()),
        ] {
            let mapped = ToolError::from(error);
            assert!(!mapped.message.contains("db.internal"), "{mapped:?}");
            assert_eq!(
                mapped.withheld.as_deref().map(|w| w.contains(driver)),
                Some(true)
            );
            let result = serde_json::to_string(&mapped.clone().into_result()).unwrap();
            assert!(!result.contains("db.internal"), "{result}");
        }
        let not_found = ToolError::from(Error::NotFound {
            what: "run",
            id: "r-1".into(),
        });
        assert_eq!(not_found.withheld, None);
    }

    #[test]
    fn not_found_is_not_retryable_and_has_a_text_copy() {
        let result = ToolError::from(Error::NotFound {
            what: "run",
            id: "r-1".into(),
        })
        .into_result();
        let structured = result.structured_content.clone().unwrap();
        assert_eq!(structured["error"]["kind"], "not_found");
        assert_eq!(structured["error"]["retryable"], false);
        assert!(structured["error"].get("retry_after_ms").is_none());
        let text = serde_json::to_value(&result.content[0]).unwrap();
        assert_eq!(text["text"], "not_found: run not found: r-1");
    }
}
