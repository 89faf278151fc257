//! Built-in evidence providers. Each reserves its id, publishes a capability contract (checks,
//! params and result schemas, allowed comparators) that define-time validation checks specs
//! against, reports its answers as `verified`, and turns bad params or unreadable sources into
//! evidence errors with stable codes rather than provider failures.

mod env;
#[cfg(feature = "http")]
mod http;
mod json;
mod time;

use serde_json::Value;

pub use env::{EnvConfig, EnvProvider};
#[cfg(feature = "http")]
pub use http::{HttpConfig, HttpConfigError, HttpProvider, is_public_address};
pub use json::{JsonConfig, JsonConfigError, JsonProvider};
pub use time::{TimeConfig, TimeProvider};

use crate::comparator::Comparator;
use crate::evidence::{EvidenceAnchor, EvidenceError, EvidenceResult, EvidenceValue, TrustLane};
use crate::hashing::canonical_json;
use crate::provider::CheckContract;

/// The provider ids reserved for built-ins.
pub const RESERVED_PROVIDER_IDS: [&str; 4] = ["time", "env", "json", "http"];

fn contract(
    check_id: &str,
    description: &str,
    params_schema: Value,
    result_schema: Value,
    comparators: &[Comparator],
) -> CheckContract {
    CheckContract {
        // Built-in check ids are constants that satisfy the id rules.
        check_id: check_id
            .parse()
            .unwrap_or_else(|_| unreachable!("built-in check id {check_id}")),
        description: description.to_owned(),
        params_schema,
        result_schema,
        allowed_comparators: comparators.to_vec(),
    }
}

/// An anchor of `anchor_type` whose value is the canonical JSON of `fields`.
fn anchor(anchor_type: &str, fields: &Value) -> EvidenceAnchor {
    // Canonical JSON is UTF-8, so the bytes become the string without a copy.
    let anchor_value = canonical_json(fields)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    EvidenceAnchor {
        anchor_type: anchor_type.to_owned(),
        anchor_value,
    }
}

/// A verified JSON answer with an anchor of `anchor_type` over `anchor_fields`.
fn answer(value: Value, anchor_type: &str, anchor_fields: &Value) -> EvidenceResult {
    EvidenceResult {
        value: Some(EvidenceValue::Json(value)),
        evidence_anchor: Some(anchor(anchor_type, anchor_fields)),
        content_type: Some("application/json".into()),
        ..EvidenceResult::empty(TrustLane::Verified)
    }
}

/// An evidence error with a stable `code`.
fn refuse(code: &str, message: impl Into<String>) -> EvidenceResult {
    EvidenceResult::failed(EvidenceError::new(code, message))
}
