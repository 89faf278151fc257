//! The `time` provider: the trigger's time, and whether it is after or before a timestamp. It
//! reads only `context.trigger_time`, never a clock, so replay gives the same answers.

use async_trait::async_trait;
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{answer, contract, refuse};
use crate::comparator::Comparator::{self, *};
use crate::evidence::{EvidenceContext, EvidenceError, EvidenceQuery, EvidenceResult};
use crate::provider::{EvidenceProvider, ProviderContract, ProviderError};
use crate::time::Timestamp;

/// Configuration of the `time` provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// Whether logical trigger times are answered (otherwise they are an error).
    pub allow_logical: bool,
}

impl Default for TimeConfig {
    fn default() -> Self {
        Self {
            allow_logical: true,
        }
    }
}

/// The `time` provider.
#[derive(Debug)]
pub struct TimeProvider {
    config: TimeConfig,
    contract: ProviderContract,
}

const ORDERED: [Comparator; 9] = [
    Equals,
    NotEquals,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
    InSet,
    Exists,
    NotExists,
];
const BOOLEAN: [Comparator; 5] = [Equals, NotEquals, InSet, Exists, NotExists];

impl TimeProvider {
    /// A `time` provider with `config`.
    #[must_use]
    pub fn new(config: TimeConfig) -> Self {
        let timestamp = json!({
            "type": "object",
            "properties": {"timestamp": {
                "description": "Unix milliseconds, a logical tick, or an RFC 3339 date-time",
                "oneOf": [{"type": "integer"}, {"type": "string", "minLength": 1}]
            }},
            "required": ["timestamp"],
            "additionalProperties": false
        });
        let checks = vec![
            contract(
                "now",
                "The trigger's time as an integer (Unix milliseconds or a logical tick).",
                json!({"type": ["object", "null"], "maxProperties": 0}),
                json!({"type": "integer"}),
                &ORDERED,
            ),
            contract(
                "after",
                "Whether the trigger's time is strictly after `timestamp`.",
                timestamp.clone(),
                json!({"type": "boolean"}),
                &BOOLEAN,
            ),
            contract(
                "before",
                "Whether the trigger's time is strictly before `timestamp`.",
                timestamp,
                json!({"type": "boolean"}),
                &BOOLEAN,
            ),
        ];
        let contract = ProviderContract {
            provider_id: "time"
                .parse()
                .unwrap_or_else(|_| unreachable!("`time` is a valid id")),
            description: "The trigger's time; never the wall clock.".into(),
            checks,
        };
        Self { config, contract }
    }
}

/// The trigger time as exact JSON, as an integer for comparisons, and the anchor type naming
/// its kind.
fn trigger_time(time: Timestamp) -> (Value, i128, &'static str) {
    match time {
        Timestamp::UnixMillis(ms) => (json!(ms), i128::from(ms), "trigger_time_unix_millis"),
        Timestamp::Logical(tick) => (json!(tick), i128::from(tick), "trigger_time_logical"),
    }
}

/// The `timestamp` param in the trigger time's units.
fn threshold(params: Option<&Value>, time: Timestamp) -> Result<i128, EvidenceError> {
    let raw = params
        .and_then(|p| p.get("timestamp"))
        .ok_or_else(|| EvidenceError::new("params_missing", "params.timestamp is required"))?;
    match (raw, time) {
        (Value::Number(n), _) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| {
                EvidenceError::new("params_invalid", "params.timestamp must be an integer")
            }),
        (Value::String(s), Timestamp::UnixMillis(_)) => DateTime::parse_from_rfc3339(s)
            .map(|t| i128::from(t.timestamp_millis()))
            .map_err(|e| {
                EvidenceError::new(
                    "params_invalid",
                    format!("params.timestamp is not an RFC 3339 date-time: {e}"),
                )
            }),
        (Value::String(_), Timestamp::Logical(_)) => Err(EvidenceError::new(
            "timestamp_kind_mismatch",
            "a date-time cannot be compared with a logical trigger time",
        )),
        _ => Err(EvidenceError::new(
            "params_invalid",
            "params.timestamp must be an integer or an RFC 3339 string",
        )),
    }
}

#[async_trait]
impl EvidenceProvider for TimeProvider {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        if matches!(ctx.trigger_time, Timestamp::Logical(_)) && !self.config.allow_logical {
            return Ok(refuse(
                "logical_time_disallowed",
                "this provider is configured for Unix-millisecond trigger times only",
            ));
        }
        let (exact, now, anchor_type) = trigger_time(ctx.trigger_time);
        let anchor = json!({"trigger_time": exact});
        let value = match query.check_id.as_str() {
            "now" => exact,
            check @ ("after" | "before") => {
                match threshold(query.params.as_ref(), ctx.trigger_time) {
                    Ok(at) => json!(if check == "after" { now > at } else { now < at }),
                    Err(error) => return Ok(EvidenceResult::failed(error)),
                }
            }
            other => {
                return Ok(refuse(
                    "unknown_check",
                    format!("time has no check {other}"),
                ));
            }
        };
        Ok(answer(value, anchor_type, &anchor))
    }
}
