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
    /// The work one evaluation takes beyond the observed value, in items: 1, plus the items of
    /// an array `expected` (what a set comparison searches for).
    #[must_use]
    pub fn weight(&self) -> usize {
        1 + self
            .expected
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }

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
                (Value::Array(v), Value::Array(e)) => TriState::from(contains_all(v, e)),
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

/// Up to this many expected items, `contains` scans the observed array once per item; past
/// it, sorting the observed items once is cheaper.
const LINEAR_CONTAINS_ITEMS: usize = 4;

/// Whether every item of `expected` is in `observed`, in O((n + m) log n) rather than the
/// O(n · m) of a scan per item: the observed items are sorted once in [`json_order`], which
/// agrees with `==`, and each expected item is found by binary search.
fn contains_all(observed: &[Value], expected: &[Value]) -> bool {
    if expected.len() <= LINEAR_CONTAINS_ITEMS {
        return expected.iter().all(|item| observed.contains(item));
    }
    let mut sorted: Vec<&Value> = observed.iter().collect();
    sorted.sort_unstable_by(|a, b| json_order(a, b));
    expected.iter().all(|item| {
        sorted
            .binary_search_by(|probe| json_order(probe, item))
            .is_ok()
    })
}

/// A total order on JSON values that is `Equal` exactly when `==` holds: by kind (null,
/// boolean, number, string, array, object), numbers first by their representation (unsigned,
/// negative integer, float: serde_json never finds an integer equal to a float) then by value
/// (`0.0` and `-0.0` are equal, as for `==`), strings by bytes, arrays element by element,
/// objects as their entries sorted by key (equal maps are equal in any insertion order).
pub(crate) fn json_order(a: &Value, b: &Value) -> Ordering {
    fn kind(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    fn number_order(a: &serde_json::Number, b: &serde_json::Number) -> Ordering {
        match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) => return a.cmp(&b),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => {}
        }
        match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => return a.cmp(&b),
            (Some(_), None) => return Ordering::Less,
            (None, Some(_)) => return Ordering::Greater,
            (None, None) => {}
        }
        // Both floats, never NaN in JSON.
        let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
        a.partial_cmp(&b).unwrap_or(Ordering::Equal)
    }
    fn sorted_entries(map: &serde_json::Map<String, Value>) -> Vec<(&String, &Value)> {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|x, y| x.0.cmp(y.0));
        entries
    }
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        (Value::Number(a), Value::Number(b)) => number_order(a, b),
        (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Value::Array(a), Value::Array(b)) => a
            .iter()
            .zip(b)
            .map(|(a, b)| json_order(a, b))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| a.len().cmp(&b.len())),
        (Value::Object(a), Value::Object(b)) => {
            let (a, b) = (sorted_entries(a), sorted_entries(b));
            a.iter()
                .zip(&b)
                .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| json_order(va, vb)))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len()))
        }
        _ => kind(a).cmp(&kind(b)),
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Small JSON values that collide often: integers and floats of the same magnitude, both
    /// zeros, short strings, and arrays and objects of them.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0u64..3).prop_map(|n| json!(n)),
            (-2i64..0).prop_map(|n| json!(n)),
            prop_oneof![Just(0.0), Just(-0.0), Just(1.0), Just(1.5)].prop_map(|f: f64| json!(f)),
            "[ab]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[xy]", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn json_order_is_equal_exactly_when_values_are(a in value(), b in value()) {
            prop_assert_eq!(json_order(&a, &b) == Ordering::Equal, a == b);
            prop_assert_eq!(json_order(&a, &b), json_order(&b, &a).reverse());
        }

        #[test]
        fn contains_agrees_with_a_scan_per_item(
            observed in prop::collection::vec(value(), 0..12),
            expected in prop::collection::vec(value(), 0..12),
        ) {
            let scanned = expected.iter().all(|item| observed.contains(item));
            prop_assert_eq!(contains_all(&observed, &expected), scanned);
        }
    }

    #[test]
    fn ten_thousand_items_against_ten_thousand() {
        let observed: Vec<Value> = (0..10_000).map(|i| json!(format!("item-{i}"))).collect();
        let mut expected: Vec<Value> = observed.iter().rev().cloned().collect();
        assert!(contains_all(&observed, &expected));
        expected.push(json!("item-10000"));
        assert!(!contains_all(&observed, &expected));
        let integer_vs_float = [json!(1), json!(2), json!(3), json!(4), json!(5)];
        let floats: Vec<Value> = (1..=5).map(|i| json!(f64::from(i))).collect();
        assert!(!contains_all(&integer_vs_float, &floats));
    }
}
