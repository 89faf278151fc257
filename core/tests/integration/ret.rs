//! The requirement evaluator: truth tables in both logic modes, traces, the depth guard, and a
//! property test against a tiny reference evaluator.

use std::collections::HashMap;

use decision_gate_core::ConditionId;
use decision_gate_core::ret::{
    CompiledRequirement, LogicMode, MAX_DEPTH, Requirement, TraceStep, TriState,
};
use proptest::prelude::*;

use crate::support::id;

const T: TriState = TriState::True;
const F: TriState = TriState::False;
const U: TriState = TriState::Unknown;
const ALL: [TriState; 3] = [T, F, U];

/// Evaluates `req` over leaves `x0..xn` holding `values`.
fn eval(req: &Requirement, values: &[TriState], mode: LogicMode) -> (TriState, Vec<TraceStep>) {
    let compiled =
        CompiledRequirement::compile(req, &mut |c: &ConditionId| c.as_str()[1..].parse().ok())
            .expect("leaves resolve");
    let mut trace = Vec::new();
    (compiled.evaluate(values, mode, &mut trace), trace)
}

fn leaf(i: usize) -> Requirement {
    Requirement::Condition(id(&format!("x{i}")))
}

fn table(op: fn(Vec<Requirement>) -> Requirement, mode: LogicMode) -> Vec<TriState> {
    let mut out = Vec::new();
    for a in ALL {
        for b in ALL {
            out.push(eval(&op(vec![leaf(0), leaf(1)]), &[a, b], mode).0);
        }
    }
    out
}

#[test]
fn kleene_and_or_not_tables() {
    // Rows a = T, F, U; columns b = T, F, U.
    assert_eq!(
        table(Requirement::And, LogicMode::Kleene),
        [T, F, U, F, F, F, U, F, U]
    );
    assert_eq!(
        table(Requirement::Or, LogicMode::Kleene),
        [T, T, T, T, F, U, T, U, U]
    );
    let not: Vec<_> = ALL
        .iter()
        .map(|v| {
            eval(
                &Requirement::Not(Box::new(leaf(0))),
                &[*v],
                LogicMode::Kleene,
            )
            .0
        })
        .collect();
    assert_eq!(not, [F, T, U]);
}

#[test]
fn bochvar_tables_make_unknown_infectious() {
    assert_eq!(
        table(Requirement::And, LogicMode::Bochvar),
        [T, F, U, F, F, U, U, U, U]
    );
    assert_eq!(
        table(Requirement::Or, LogicMode::Bochvar),
        [T, T, U, T, F, U, U, U, U]
    );
}

#[test]
fn empty_folds() {
    for mode in [LogicMode::Kleene, LogicMode::Bochvar] {
        assert_eq!(eval(&Requirement::And(vec![]), &[], mode).0, T);
        assert_eq!(eval(&Requirement::Or(vec![]), &[], mode).0, F);
        assert_eq!(
            eval(
                &Requirement::RequireGroup {
                    min: 0,
                    reqs: vec![]
                },
                &[],
                mode
            )
            .0,
            T
        );
        assert_eq!(
            eval(
                &Requirement::RequireGroup {
                    min: 1,
                    reqs: vec![]
                },
                &[],
                mode
            )
            .0,
            F
        );
    }
}

#[test]
fn require_group_counts_in_both_modes() {
    let group = |min| Requirement::RequireGroup {
        min,
        reqs: vec![leaf(0), leaf(1), leaf(2)],
    };
    for mode in [LogicMode::Kleene, LogicMode::Bochvar] {
        assert_eq!(eval(&group(2), &[T, T, F], mode).0, T);
        assert_eq!(eval(&group(2), &[T, U, U], mode).0, U);
        assert_eq!(eval(&group(2), &[T, F, F], mode).0, F);
        assert_eq!(eval(&group(2), &[U, U, U], mode).0, U);
        assert_eq!(eval(&group(0), &[F, F, F], mode).0, T);
        assert_eq!(
            eval(&group(4), &[T, T, T], mode).0,
            F,
            "min above the child count can never pass"
        );
    }
}

#[test]
fn every_leaf_is_traced_in_order_without_short_circuit() {
    let req = Requirement::And(vec![leaf(0), leaf(1), leaf(2), leaf(0)]);
    let (status, trace) = eval(&req, &[T, F, U], LogicMode::Kleene);
    assert_eq!(status, F);
    let visits: Vec<_> = trace.iter().map(|s| (s.slot, s.status)).collect();
    assert_eq!(
        visits,
        [(0, T), (1, F), (2, U), (0, T)],
        "a repeated leaf is traced again"
    );
}

fn nested_not(depth: usize) -> Requirement {
    (0..depth).fold(leaf(0), |inner, _| Requirement::Not(Box::new(inner)))
}

#[test]
fn depth_guard_fails_closed() {
    // 32 Nots put the leaf at depth 32: allowed. 33 put it at 33: unknown.
    let (ok, _) = eval(&nested_not(MAX_DEPTH), &[T], LogicMode::Kleene);
    assert_eq!(ok, T, "an even number of negations of true");
    let (deep, trace) = eval(&nested_not(MAX_DEPTH + 1), &[T], LogicMode::Kleene);
    assert_eq!(deep, U);
    assert!(
        trace.is_empty(),
        "the guard fires before the leaf is visited"
    );
    assert_eq!(nested_not(MAX_DEPTH + 1).depth(), 33);
}

#[test]
fn depth_guard_keeps_the_trace_before_it_fired() {
    let req = Requirement::And(vec![leaf(1), nested_not(MAX_DEPTH)]);
    let (status, trace) = eval(&req, &[T, T], LogicMode::Kleene);
    assert_eq!(status, U);
    assert_eq!(
        trace.len(),
        1,
        "the first leaf was visited before the deep branch aborted"
    );
}

/// The reference: a direct transcription of the truth tables, recursive over the tree.
fn reference(
    req: &Requirement,
    values: &HashMap<String, TriState>,
    mode: LogicMode,
    depth: usize,
) -> Option<TriState> {
    if depth > MAX_DEPTH {
        return None;
    }
    let kids = |reqs: &[Requirement]| {
        reqs.iter()
            .map(|r| reference(r, values, mode, depth + 1))
            .collect::<Option<Vec<_>>>()
    };
    Some(match req {
        Requirement::Condition(c) => values.get(c.as_str()).copied().unwrap_or(U),
        Requirement::Not(inner) => match reference(inner, values, mode, depth + 1)? {
            T => F,
            F => T,
            U => U,
        },
        Requirement::And(reqs) => {
            let k = kids(reqs)?;
            if mode == LogicMode::Bochvar && k.contains(&U) {
                U
            } else if k.contains(&F) {
                F
            } else if k.contains(&U) {
                U
            } else {
                T
            }
        }
        Requirement::Or(reqs) => {
            let k = kids(reqs)?;
            if mode == LogicMode::Bochvar && k.contains(&U) {
                U
            } else if k.contains(&T) {
                T
            } else if k.contains(&U) {
                U
            } else {
                F
            }
        }
        Requirement::RequireGroup { min, reqs } => {
            let k = kids(reqs)?;
            let t = k.iter().filter(|s| **s == T).count();
            let u = k.iter().filter(|s| **s == U).count();
            let min = usize::from(*min);
            if t >= min {
                T
            } else if t + u < min {
                F
            } else {
                U
            }
        }
    })
}

fn arb_requirement() -> impl Strategy<Value = Requirement> {
    let leaf = (0..6usize).prop_map(leaf);
    leaf.prop_recursive(40, 200, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Requirement::And),
            prop::collection::vec(inner.clone(), 0..5).prop_map(Requirement::Or),
            inner.clone().prop_map(|r| Requirement::Not(Box::new(r))),
            (0u8..6, prop::collection::vec(inner, 0..5))
                .prop_map(|(min, reqs)| Requirement::RequireGroup { min, reqs }),
        ]
    })
}

fn arb_tristate() -> impl Strategy<Value = TriState> {
    prop_oneof![Just(T), Just(F), Just(U)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn evaluator_matches_the_reference(
        req in arb_requirement(),
        values in prop::collection::vec(arb_tristate(), 6),
        bochvar in any::<bool>(),
    ) {
        let mode = if bochvar { LogicMode::Bochvar } else { LogicMode::Kleene };
        let map: HashMap<String, TriState> = values.iter().enumerate().map(|(i, v)| (format!("x{i}"), *v)).collect();
        let expected = reference(&req, &map, mode, 0).unwrap_or(U);
        let (actual, trace) = eval(&req, &values, mode);
        prop_assert_eq!(actual, expected);
        if req.depth() <= MAX_DEPTH {
            let mut leaves = 0;
            req.for_each_condition(&mut |_| leaves += 1);
            prop_assert_eq!(trace.len(), leaves, "every leaf is traced exactly once per visit");
        }
    }
}
