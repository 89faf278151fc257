//! The comparator matrix: every comparator against every kind of value, decimals, dates, bytes,
//! missing values and type mismatches. The evidence value is always the left operand.

use decision_gate_core::Comparator::{self, *};
use decision_gate_core::TriState::{self, False as F, True as T, Unknown as U};
use decision_gate_core::comparator::compare;
use decision_gate_core::evidence::EvidenceValue;
use proptest::prelude::*;
use serde_json::{Value, json};

/// `comparator(evidence, expected)` on JSON evidence.
fn c(comparator: Comparator, evidence: Value, expected: Value) -> TriState {
    compare(
        comparator,
        Some(&expected),
        Some(&EvidenceValue::Json(evidence)),
    )
}

#[test]
fn equality_uses_decimals_for_numbers_and_structure_otherwise() {
    assert_eq!(c(Equals, json!(1.0), json!(1)), T);
    assert_eq!(c(Equals, json!(1000), json!(1e3)), T);
    assert_eq!(c(Equals, json!(0.015), json!(1.5e-2)), T);
    assert_eq!(c(Equals, json!(-0.0), json!(0)), T);
    assert_eq!(
        c(Equals, json!(123), json!("123")),
        F,
        "strings are never numbers"
    );
    assert_eq!(c(Equals, json!(1), json!(true)), F);
    assert_eq!(c(Equals, json!(0), json!(null)), F);
    assert_eq!(c(Equals, json!(1), json!([1])), F);
    assert_eq!(c(Equals, json!(null), json!(null)), T);
    assert_eq!(c(Equals, json!("café"), json!("café")), T);
    assert_eq!(
        c(NotEquals, json!(1), json!("a")),
        T,
        "a type mismatch is unequal, not unknown"
    );
    assert_eq!(c(NotEquals, json!(2), json!(2.0)), F);
    assert_eq!(
        c(Equals, json!([1]), json!([1.0])),
        F,
        "nested numbers compare structurally"
    );
    assert_eq!(
        c(
            Equals,
            json!({"a": [1, {"b": null}]}),
            json!({"a": [1, {"b": null}]})
        ),
        T
    );
}

#[test]
fn ordering_is_exact_across_integer_and_float() {
    assert_eq!(c(GreaterThan, json!(1.5), json!(1)), T);
    assert_eq!(c(GreaterThan, json!(u64::MAX), json!(i64::MAX)), T);
    assert_eq!(c(LessThan, json!(i64::MIN), json!(0)), T);
    assert_eq!(c(GreaterThan, json!(1e-9), json!(0)), T);
    assert_eq!(c(GreaterThan, json!(-0.0), json!(0.0)), F);
    assert_eq!(c(LessThan, json!(-0.0), json!(0.0)), F);
    assert_eq!(c(GreaterThanOrEqual, json!(3), json!(3.0)), T);
    assert_eq!(c(LessThanOrEqual, json!(2.9999), json!(3)), T);
    assert_eq!(
        c(
            GreaterThan,
            json!(9_007_199_254_740_993_u64),
            json!(9_007_199_254_740_992.0)
        ),
        T,
        "integers stay exact"
    );
    // The float just below 2^64 reads as 18446744073709550000; the integer between them compares
    // against that decimal, as the reference does.
    assert_eq!(
        c(
            LessThan,
            json!(18_446_744_073_709_549_600_u64),
            json!(18_446_744_073_709_549_568.0)
        ),
        T
    );
}

#[test]
fn ordering_on_dates_and_everything_else_is_unknown() {
    assert_eq!(
        c(
            GreaterThan,
            json!("2024-03-01T00:00:00Z"),
            json!("2024-02-29T23:59:59+00:00")
        ),
        T
    );
    assert_eq!(
        c(
            LessThan,
            json!("2024-03-01T01:00:00+02:00"),
            json!("2024-03-01T00:00:00Z")
        ),
        T,
        "instants, not text"
    );
    assert_eq!(c(GreaterThan, json!("2024-03-01"), json!("2024-02-29")), T);
    assert_eq!(
        c(
            GreaterThan,
            json!("2024-03-01"),
            json!("2024-02-29T00:00:00Z")
        ),
        U,
        "a date and an instant do not compare"
    );
    assert_eq!(c(GreaterThan, json!(999999), json!("Infinity")), U);
    assert_eq!(
        c(GreaterThan, json!("b"), json!("a")),
        U,
        "plain strings do not order numerically"
    );
    for evidence in [
        json!(true),
        json!([1]),
        json!({"a": 1}),
        json!(null),
        json!("2"),
    ] {
        assert_eq!(c(GreaterThan, evidence, json!(1)), U);
    }
    assert_eq!(c(LessThan, json!(1), json!(null)), U);
}

#[test]
fn lexicographic_is_code_point_order_on_strings_only() {
    assert_eq!(c(LexGreaterThan, json!("a"), json!("")), T);
    assert_eq!(c(LexLessThan, json!("B"), json!("a")), T, "no case folding");
    assert_eq!(c(LexGreaterThanOrEqual, json!("é"), json!("z")), T);
    assert_eq!(c(LexLessThanOrEqual, json!("abc"), json!("abc")), T);
    assert_eq!(c(LexGreaterThan, json!(10), json!(2)), U);
    for evidence in [json!(null), json!(true), json!([]), json!({})] {
        assert_eq!(c(LexGreaterThan, evidence, json!("a")), U);
    }
}

#[test]
fn contains_on_strings_and_arrays() {
    assert_eq!(c(Contains, json!("haystack"), json!("")), T);
    assert_eq!(c(Contains, json!(""), json!("needle")), F);
    assert_eq!(
        c(Contains, json!("Haystack"), json!("hay")),
        F,
        "case-sensitive"
    );
    assert_eq!(c(Contains, json!([1, 2, 3, 4]), json!([2, 4])), T);
    assert_eq!(c(Contains, json!([1, 2, 3]), json!([2, 4])), F);
    for evidence in [json!(1), json!(true), json!(null), json!({"a": 1})] {
        assert_eq!(c(Contains, evidence, json!("a")), U);
    }
    assert_eq!(c(Contains, json!("abc"), json!(["a"])), U);
}

#[test]
fn in_set_needs_a_scalar_and_an_array() {
    assert_eq!(c(InSet, json!(42), json!([1, 7, 42, 99])), T);
    assert_eq!(c(InSet, json!(41), json!([1, 7, 42, 99])), F);
    assert_eq!(c(InSet, json!(null), json!([null, "a"])), T);
    assert_eq!(c(InSet, json!(1), json!([])), F);
    assert_eq!(c(InSet, json!("1"), json!([1, 2, 3])), F);
    for expected in [json!("abc"), json!({"a": 1}), json!(3)] {
        assert_eq!(c(InSet, json!("a"), expected), U);
    }
    assert_eq!(c(InSet, json!([1]), json!([[1]])), U);
    assert_eq!(c(InSet, json!({"a": 1}), json!([{"a": 1}])), U);
}

#[test]
fn deep_equality_on_containers_only() {
    assert_eq!(
        c(
            DeepEquals,
            json!({"a": {"b": [1, 2]}}),
            json!({"a": {"b": [1, 2]}})
        ),
        T
    );
    assert_eq!(c(DeepEquals, json!([]), json!([])), T);
    assert_eq!(c(DeepEquals, json!({}), json!({})), T);
    assert_eq!(c(DeepNotEquals, json!([1]), json!([2])), T);
    assert_eq!(c(DeepEquals, json!([1]), json!({"0": 1})), U);
    for expected in [json!("x"), json!(42)] {
        assert_eq!(c(DeepEquals, json!({"a": 1}), expected.clone()), U);
        assert_eq!(c(DeepNotEquals, json!({"a": 1}), expected), U);
    }
}

#[test]
fn existence_and_missing_values() {
    let none: Option<&EvidenceValue> = None;
    let null = EvidenceValue::Json(json!(null));
    assert_eq!(compare(Exists, None, Some(&null)), T, "null is a value");
    assert_eq!(compare(Exists, None, none), F);
    assert_eq!(compare(NotExists, None, none), T);
    assert_eq!(
        compare(NotExists, Some(&json!(1)), Some(&null)),
        F,
        "expected is ignored"
    );
    for comparator in Comparator::ALL.into_iter().filter(|c| c.uses_expected()) {
        assert_eq!(
            compare(comparator, Some(&json!(1)), none),
            U,
            "{comparator:?} with no value"
        );
        assert_eq!(
            compare(comparator, None, Some(&EvidenceValue::Json(json!(1)))),
            U,
            "{comparator:?} with no expected"
        );
    }
}

#[test]
fn bytes_compare_exactly_and_only_for_equality() {
    let bytes = EvidenceValue::Bytes(vec![1, 2, 3]);
    assert_eq!(compare(Equals, Some(&json!([1, 2, 3])), Some(&bytes)), T);
    assert_eq!(compare(NotEquals, Some(&json!([1, 2])), Some(&bytes)), T);
    assert_eq!(
        compare(Equals, Some(&json!([999])), Some(&bytes)),
        U,
        "not a byte"
    );
    assert_eq!(compare(Equals, Some(&json!("AQID")), Some(&bytes)), U);
    assert_eq!(compare(GreaterThan, Some(&json!([1])), Some(&bytes)), U);
    assert_eq!(compare(Exists, None, Some(&bytes)), T);
    assert_eq!(
        compare(
            Equals,
            Some(&json!([])),
            Some(&EvidenceValue::Bytes(vec![]))
        ),
        T
    );
}

#[test]
fn define_time_type_rules_match_evaluation() {
    // An expected value the type check accepts can match something; one it refuses never can.
    assert!(
        GreaterThan
            .expected_type_error(Some(&json!("2024-01-01")))
            .is_none()
    );
    assert!(
        GreaterThan
            .expected_type_error(Some(&json!("soon")))
            .is_some()
    );
    assert!(InSet.expected_type_error(Some(&json!(3))).is_some());
    assert!(Exists.expected_type_error(None).is_none());
    assert!(Equals.expected_type_error(None).is_some());
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        (-1000i64..1000).prop_map(|n| json!(n as f64 / 8.0)),
    ]
}

/// The reference semantics: both sides as decimals of their shortest text.
fn decimal(v: &Value) -> bigdecimal::BigDecimal {
    v.to_string().parse().expect("a JSON number is a decimal")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn numeric_comparators_agree_with_decimal_arithmetic(a in number(), b in number()) {
        let ordering = decimal(&a).cmp(&decimal(&b));
        prop_assert_eq!(c(Equals, a.clone(), b.clone()), TriState::from(ordering.is_eq()));
        prop_assert_eq!(c(NotEquals, a.clone(), b.clone()), TriState::from(ordering.is_ne()));
        prop_assert_eq!(c(GreaterThan, a.clone(), b.clone()), TriState::from(ordering.is_gt()));
        prop_assert_eq!(c(GreaterThanOrEqual, a.clone(), b.clone()), TriState::from(ordering.is_ge()));
        prop_assert_eq!(c(LessThan, a.clone(), b.clone()), TriState::from(ordering.is_lt()));
        prop_assert_eq!(c(LessThanOrEqual, a, b), TriState::from(ordering.is_le()));
    }
}
