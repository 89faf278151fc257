//! Comparators: how a condition turns a provider's value into true, false or unknown.
//!
//! The evidence value is always the left operand (`greater_than` means `evidence > expected`).
//! A [`Comparison`] is built once per condition at define time with its expected value already
//! parsed (numbers, dates, byte strings), so evaluating it does no parsing of the expected side.
//!
//! Numbers compare by exact decimal value at the top level, so `1 == 1.0`, `1e3 == 1000` and
//! `u64::MAX > i64::MAX`. Integers compare as integers and floats as floats, which orders them
//! exactly as their shortest decimal forms would; only a mixed integer/float pair pays for a
//! decimal conversion. Nested values (inside arrays and objects, `in_set`, `contains`) use JSON
//! structural equality, where `1` and `1.0` differ.

use std::cmp::Ordering;
use std::str::FromStr;

use bigdecimal::BigDecimal;
use chrono::{DateTime, FixedOffset, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::evidence::EvidenceValue;
use crate::ret::TriState;

/// The sixteen comparators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// Decimal equality for two numbers, structural equality otherwise; a JSON type mismatch is
    /// false. Byte evidence compares byte-exactly with an array of integers 0..=255, and with
    /// anything else is unknown.
    Equals,
    /// The negation of `equals` (a JSON type mismatch is true; bytes as for `equals`).
    NotEquals,
    /// `evidence > expected` for numbers, or for two dates (RFC 3339 date-times or `YYYY-MM-DD`).
    GreaterThan,
    /// `evidence >= expected`, as `greater_than`.
    GreaterThanOrEqual,
    /// `evidence < expected`, as `greater_than`.
    LessThan,
    /// `evidence <= expected`, as `greater_than`.
    LessThanOrEqual,
    /// String order by code point.
    LexGreaterThan,
    /// String order by code point.
    LexGreaterThanOrEqual,
    /// String order by code point.
    LexLessThan,
    /// String order by code point.
    LexLessThanOrEqual,
    /// Substring of a string, or every expected element present in an array.
    Contains,
    /// A scalar evidence value is one of the expected array's elements.
    InSet,
    /// Structural equality of two arrays or two objects.
    DeepEquals,
    /// Structural inequality of two arrays or two objects.
    DeepNotEquals,
    /// The provider returned a value (JSON `null` counts).
    Exists,
    /// The provider returned no value.
    NotExists,
}

impl Comparator {
    /// Every comparator, in declaration order.
    pub const ALL: [Self; 16] = [
        Self::Equals,
        Self::NotEquals,
        Self::GreaterThan,
        Self::GreaterThanOrEqual,
        Self::LessThan,
        Self::LessThanOrEqual,
        Self::LexGreaterThan,
        Self::LexGreaterThanOrEqual,
        Self::LexLessThan,
        Self::LexLessThanOrEqual,
        Self::Contains,
        Self::InSet,
        Self::DeepEquals,
        Self::DeepNotEquals,
        Self::Exists,
        Self::NotExists,
    ];

    /// The snake_case wire name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Equals => "equals",
            Self::NotEquals => "not_equals",
            Self::GreaterThan => "greater_than",
            Self::GreaterThanOrEqual => "greater_than_or_equal",
            Self::LessThan => "less_than",
            Self::LessThanOrEqual => "less_than_or_equal",
            Self::LexGreaterThan => "lex_greater_than",
            Self::LexGreaterThanOrEqual => "lex_greater_than_or_equal",
            Self::LexLessThan => "lex_less_than",
            Self::LexLessThanOrEqual => "lex_less_than_or_equal",
            Self::Contains => "contains",
            Self::InSet => "in_set",
            Self::DeepEquals => "deep_equals",
            Self::DeepNotEquals => "deep_not_equals",
            Self::Exists => "exists",
            Self::NotExists => "not_exists",
        }
    }

    /// Whether the comparator reads `expected` at all.
    #[must_use]
    pub fn uses_expected(self) -> bool {
        !matches!(self, Self::Exists | Self::NotExists)
    }

    /// The define-time check of an expected value's type: `None` when it can ever match,
    /// otherwise the rule it breaks.
    #[must_use]
    pub fn expected_type_error(self, expected: Option<&Value>) -> Option<&'static str> {
        if !self.uses_expected() {
            return None;
        }
        let Some(expected) = expected.filter(|v| !v.is_null()) else {
            return Some("expected is required for this comparator");
        };
        let ok = match self {
            Self::Equals | Self::NotEquals | Self::Exists | Self::NotExists => true,
            Self::GreaterThan
            | Self::GreaterThanOrEqual
            | Self::LessThan
            | Self::LessThanOrEqual => {
                expected.is_number() || expected.as_str().and_then(DateValue::parse).is_some()
            }
            Self::LexGreaterThan
            | Self::LexGreaterThanOrEqual
            | Self::LexLessThan
            | Self::LexLessThanOrEqual => expected.is_string(),
            Self::Contains => expected.is_string() || expected.is_array(),
            Self::InSet => expected.is_array(),
            Self::DeepEquals | Self::DeepNotEquals => expected.is_array() || expected.is_object(),
        };
        (!ok).then_some(match self {
            Self::GreaterThan
            | Self::GreaterThanOrEqual
            | Self::LessThan
            | Self::LessThanOrEqual => {
                "expected must be a number or a date (RFC 3339 date-time or YYYY-MM-DD)"
            }
            Self::LexGreaterThan
            | Self::LexGreaterThanOrEqual
            | Self::LexLessThan
            | Self::LexLessThanOrEqual => "expected must be a string",
            Self::Contains => "expected must be a string or an array",
            Self::InSet => "expected must be an array",
            _ => "expected must be an array or an object",
        })
    }
}

/// An exact number: integers stay integers, other numbers are finite doubles.
#[derive(Clone, Copy, Debug)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn of(n: &Number) -> Self {
        if let Some(i) = n.as_i64() {
            Self::Int(i128::from(i))
        } else if let Some(u) = n.as_u64() {
            Self::Int(i128::from(u))
        } else {
            // serde_json numbers are always finite.
            Self::Float(n.as_f64().unwrap_or(0.0))
        }
    }

    /// The decimal the number's shortest text denotes. Only used for mixed pairs.
    fn decimal(self) -> BigDecimal {
        match self {
            Self::Int(i) => BigDecimal::from(i),
            // `Display` of a finite f64 is its shortest round-trip text, never an exponent.
            Self::Float(f) => BigDecimal::from_str(&f.to_string()).unwrap_or_default(),
        }
    }
}

/// A number on the expected side, with its decimal pre-built when it is a float.
#[derive(Clone, Debug)]
struct ExpectedNum {
    num: Num,
    decimal: Option<BigDecimal>,
}

impl ExpectedNum {
    fn new(n: &Number) -> Self {
        let num = Num::of(n);
        let decimal = matches!(num, Num::Float(_)).then(|| num.decimal());
        Self { num, decimal }
    }

    /// `evidence` compared with this expected number.
    fn cmp_evidence(&self, evidence: Num) -> Ordering {
        match (evidence, self.num) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
            (Num::Int(a), Num::Float(_)) => self
                .decimal
                .as_ref()
                .map_or(Ordering::Equal, |d| BigDecimal::from(a).cmp(d)),
            (Num::Float(_), Num::Int(b)) => evidence.decimal().cmp(&BigDecimal::from(b)),
        }
    }
}

/// A calendar value usable for ordering: an instant or a date, never compared with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum DateValue {
    Instant(DateTime<FixedOffset>),
    Day(NaiveDate),
}

impl DateValue {
    fn parse(text: &str) -> Option<Self> {
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Some(Self::Instant(t));
        }
        let b = text.as_bytes();
        let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
        shaped
            .then(|| {
                NaiveDate::parse_from_str(text, "%Y-%m-%d")
                    .ok()
                    .map(Self::Day)
            })
            .flatten()
    }

    fn cmp_same_kind(self, other: Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Instant(a), Self::Instant(b)) => Some(a.cmp(&b)),
            (Self::Day(a), Self::Day(b)) => Some(a.cmp(&b)),
            _ => None,
        }
    }
}

/// A comparator with its expected value parsed once.
#[derive(Clone, Debug)]
pub struct Comparison {
    comparator: Comparator,
    expected: Option<Value>,
    number: Option<ExpectedNum>,
    date: Option<DateValue>,
    bytes: Option<Vec<u8>>,
}

impl Comparison {
    /// Prepares `comparator` against `expected`. Never fails: a combination that can never apply
    /// evaluates to unknown (define-time validation rejects those through
    /// [`Comparator::expected_type_error`]).
    #[must_use]
    pub fn new(comparator: Comparator, expected: Option<&Value>) -> Self {
        let number = expected.and_then(Value::as_number).map(ExpectedNum::new);
        let date = expected.and_then(Value::as_str).and_then(DateValue::parse);
        let bytes = expected.and_then(Value::as_array).and_then(|items| {
            items
                .iter()
                .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect::<Option<Vec<u8>>>()
        });
        Self {
            comparator,
            expected: expected.cloned(),
            number,
            date,
            bytes,
        }
    }

    /// The comparator.
    #[must_use]
    pub fn comparator(&self) -> Comparator {
        self.comparator
    }

    /// Compares the provider's value (`None` when it returned none) with the expected value.
    #[must_use]
    pub fn evaluate(&self, value: Option<&EvidenceValue>) -> TriState {
        match self.comparator {
            Comparator::Exists => return TriState::from(value.is_some()),
            Comparator::NotExists => return TriState::from(value.is_none()),
            _ => {}
        }
        match value {
            None => TriState::Unknown,
            Some(EvidenceValue::Bytes(bytes)) => match (self.comparator, &self.bytes) {
                (Comparator::Equals, Some(expected)) => TriState::from(bytes == expected),
                (Comparator::NotEquals, Some(expected)) => TriState::from(bytes != expected),
                _ => TriState::Unknown,
            },
            Some(EvidenceValue::Json(value)) => match &self.expected {
                None => TriState::Unknown,
                Some(expected) => self.compare_json(value, expected),
            },
        }
    }

    fn compare_json(&self, value: &Value, expected: &Value) -> TriState {
        use Comparator as C;
        match self.comparator {
            C::Equals | C::NotEquals => {
                let equal = match (value, &self.number) {
                    (Value::Number(n), Some(e)) => e.cmp_evidence(Num::of(n)) == Ordering::Equal,
                    _ => value == expected,
                };
                TriState::from(equal == (self.comparator == C::Equals))
            }
            C::GreaterThan | C::GreaterThanOrEqual | C::LessThan | C::LessThanOrEqual => {
                let ordering = match (value, &self.number, &self.date) {
                    (Value::Number(n), Some(e), _) => Some(e.cmp_evidence(Num::of(n))),
                    (Value::String(s), _, Some(e)) => {
                        DateValue::parse(s).and_then(|v| v.cmp_same_kind(*e))
                    }
                    _ => None,
                };
                ordering.map_or(TriState::Unknown, |o| TriState::from(self.accepts(o)))
            }
            C::LexGreaterThan
            | C::LexGreaterThanOrEqual
            | C::LexLessThan
            | C::LexLessThanOrEqual => match (value, expected) {
                (Value::String(v), Value::String(e)) => {
                    TriState::from(self.accepts(v.as_bytes().cmp(e.as_bytes())))
                }
                _ => TriState::Unknown,
            },
            C::Contains => match (value, expected) {
                (Value::String(v), Value::String(e)) => TriState::from(v.contains(e.as_str())),
                (Value::Array(v), Value::Array(e)) => {
                    TriState::from(e.iter().all(|item| v.contains(item)))
                }
                _ => TriState::Unknown,
            },
            C::InSet => match (value, expected) {
                (Value::Array(_) | Value::Object(_), _) => TriState::Unknown,
                (scalar, Value::Array(set)) => TriState::from(set.contains(scalar)),
                _ => TriState::Unknown,
            },
            C::DeepEquals | C::DeepNotEquals => match (value, expected) {
                (Value::Array(_), Value::Array(_)) | (Value::Object(_), Value::Object(_)) => {
                    TriState::from((value == expected) == (self.comparator == C::DeepEquals))
                }
                _ => TriState::Unknown,
            },
            C::Exists | C::NotExists => TriState::Unknown,
        }
    }

    /// Whether an ordering satisfies this (ordering or lexicographic) comparator.
    fn accepts(&self, ordering: Ordering) -> bool {
        use Comparator as C;
        match self.comparator {
            C::GreaterThan | C::LexGreaterThan => ordering == Ordering::Greater,
            C::GreaterThanOrEqual | C::LexGreaterThanOrEqual => ordering != Ordering::Less,
            C::LessThan | C::LexLessThan => ordering == Ordering::Less,
            C::LessThanOrEqual | C::LexLessThanOrEqual => ordering != Ordering::Greater,
            _ => false,
        }
    }
}

/// One-off comparison: `comparator(evidence = value, expected)`.
#[must_use]
pub fn compare(
    comparator: Comparator,
    expected: Option<&Value>,
    value: Option<&EvidenceValue>,
) -> TriState {
    Comparison::new(comparator, expected).evaluate(value)
}
