//! Requirement evaluation trees (RET) and three-valued logic.
//!
//! A gate's [`Requirement`] is compiled once, at define time, into a [`CompiledRequirement`]
//! whose leaves are slot indices into the stage's condition statuses, so a decision walks the
//! tree without looking anything up. Evaluation never short-circuits: every leaf is visited and
//! traced, depth first, left to right, because the trace is part of the recorded evidence.

use serde::{Deserialize, Serialize};

use crate::ids::ConditionId;

/// The deepest node allowed; the root is at depth 0. Deeper trees are rejected at define time
/// and evaluate to [`TriState::Unknown`] if evaluated anyway.
pub const MAX_DEPTH: usize = 32;

/// A requirement tree over condition ids. The wire shape is externally tagged with PascalCase
/// variant names: `{"And":[..]}`, `{"Not":{..}}`, `{"RequireGroup":{"min":2,"reqs":[..]}}`,
/// `{"Condition":"id"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Requirement {
    /// True when every child is true. `And([])` is true.
    And(Vec<Requirement>),
    /// True when any child is true. `Or([])` is false.
    Or(Vec<Requirement>),
    /// Swaps true and false; unknown stays unknown.
    Not(Box<Requirement>),
    /// True when at least `min` children are true.
    RequireGroup {
        /// How many children must be true.
        min: u8,
        /// The children.
        reqs: Vec<Requirement>,
    },
    /// A leaf: the status of one condition.
    Condition(ConditionId),
}

impl Requirement {
    /// How many nodes the tree has (operators and leaves), counted without recursion.
    #[must_use]
    pub fn node_count(&self) -> usize {
        let mut pending = vec![self];
        let mut count = 0;
        while let Some(node) = pending.pop() {
            count += 1;
            match node {
                Self::And(reqs) | Self::Or(reqs) | Self::RequireGroup { reqs, .. } => {
                    pending.extend(reqs);
                }
                Self::Not(inner) => pending.push(inner),
                Self::Condition(_) => {}
            }
        }
        count
    }

    /// The depth of the deepest node (a lone leaf has depth 0).
    #[must_use]
    pub fn depth(&self) -> usize {
        match self {
            Self::And(reqs) | Self::Or(reqs) | Self::RequireGroup { reqs, .. } => {
                reqs.iter().map(|r| r.depth() + 1).max().unwrap_or(0)
            }
            Self::Not(inner) => inner.depth() + 1,
            Self::Condition(_) => 0,
        }
    }

    /// Calls `f` on every leaf, depth first, left to right (a repeated leaf is visited again).
    pub fn for_each_condition<'a>(&'a self, f: &mut impl FnMut(&'a ConditionId)) {
        match self {
            Self::And(reqs) | Self::Or(reqs) | Self::RequireGroup { reqs, .. } => {
                reqs.iter().for_each(|r| r.for_each_condition(f));
            }
            Self::Not(inner) => inner.for_each_condition(f),
            Self::Condition(id) => f(id),
        }
    }
}

/// A three-valued truth value. On the wire it is `"True"`, `"False"` or `"Unknown"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriState {
    /// Satisfied.
    True,
    /// Not satisfied.
    False,
    /// Cannot be decided from the evidence at hand.
    Unknown,
}

impl From<bool> for TriState {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

impl std::ops::Not for TriState {
    type Output = Self;

    /// Negation: swaps true and false.
    fn not(self) -> Self {
        match self {
            Self::True => Self::False,
            Self::False => Self::True,
            Self::Unknown => Self::Unknown,
        }
    }
}

impl TriState {
    /// Conjunction under `mode`.
    #[must_use]
    pub fn and(self, other: Self, mode: LogicMode) -> Self {
        match (mode, self, other) {
            (LogicMode::Bochvar, Self::Unknown, _) | (LogicMode::Bochvar, _, Self::Unknown) => {
                Self::Unknown
            }
            (_, Self::False, _) | (_, _, Self::False) => Self::False,
            (_, Self::Unknown, _) | (_, _, Self::Unknown) => Self::Unknown,
            _ => Self::True,
        }
    }

    /// Disjunction under `mode`.
    #[must_use]
    pub fn or(self, other: Self, mode: LogicMode) -> Self {
        match (mode, self, other) {
            (LogicMode::Bochvar, Self::Unknown, _) | (LogicMode::Bochvar, _, Self::Unknown) => {
                Self::Unknown
            }
            (_, Self::True, _) | (_, _, Self::True) => Self::True,
            (_, Self::Unknown, _) | (_, _, Self::Unknown) => Self::Unknown,
            _ => Self::False,
        }
    }

    /// "At least `min` of these": true when `satisfied >= min`, false when even every unknown
    /// turning true could not reach `min`, unknown otherwise. The same in both logic modes.
    #[must_use]
    pub fn at_least(min: u8, satisfied: usize, unknown: usize) -> Self {
        let min = usize::from(min);
        if satisfied >= min {
            Self::True
        } else if satisfied + unknown < min {
            Self::False
        } else {
            Self::Unknown
        }
    }
}

/// Which three-valued logic combines children.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogicMode {
    /// Strong Kleene: a false child decides an And, a true child decides an Or.
    #[default]
    Kleene,
    /// Weak Kleene (Bochvar): any unknown child makes an And or Or unknown.
    Bochvar,
}

/// A gate outcome as named in branch rules: `"true"`, `"false"` or `"unknown"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    /// The gate evaluated true.
    True,
    /// The gate evaluated false.
    False,
    /// The gate evaluated unknown.
    Unknown,
}

impl From<TriState> for GateOutcome {
    fn from(value: TriState) -> Self {
        match value {
            TriState::True => Self::True,
            TriState::False => Self::False,
            TriState::Unknown => Self::Unknown,
        }
    }
}

/// One leaf visit of an evaluation: which condition slot, and the status it had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceStep {
    /// The condition's slot in the stage's status array.
    pub slot: u32,
    /// The status the leaf contributed.
    pub status: TriState,
}

#[derive(Clone, Debug)]
enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Group { min: u8, reqs: Box<[Node]> },
    Leaf(u32),
}

/// A requirement whose leaves are resolved to slots, ready to evaluate without lookups.
#[derive(Clone, Debug)]
pub struct CompiledRequirement {
    root: Node,
}

/// The evaluation was abandoned because a node sits deeper than [`MAX_DEPTH`].
struct TooDeep;

impl CompiledRequirement {
    /// Compiles `requirement`, resolving each leaf with `slot_of`. Returns the first condition id
    /// that `slot_of` cannot resolve as the error.
    ///
    /// # Errors
    /// The unresolved [`ConditionId`].
    pub fn compile(
        requirement: &Requirement,
        slot_of: &mut impl FnMut(&ConditionId) -> Option<u32>,
    ) -> Result<Self, ConditionId> {
        Ok(Self {
            root: compile_node(requirement, slot_of)?,
        })
    }

    /// Evaluates against `statuses` (indexed by slot), appending every leaf visit to `trace`.
    /// A tree deeper than [`MAX_DEPTH`] gives [`TriState::Unknown`]; the steps traced before the
    /// depth guard fired stay in `trace`. A slot outside `statuses` reads as unknown.
    pub fn evaluate(
        &self,
        statuses: &[TriState],
        mode: LogicMode,
        trace: &mut Vec<TraceStep>,
    ) -> TriState {
        eval_node(&self.root, 0, statuses, mode, trace).unwrap_or(TriState::Unknown)
    }
}

fn compile_node(
    req: &Requirement,
    slot_of: &mut dyn FnMut(&ConditionId) -> Option<u32>,
) -> Result<Node, ConditionId> {
    let children = |reqs: &[Requirement], slot_of: &mut dyn FnMut(&ConditionId) -> Option<u32>| {
        reqs.iter()
            .map(|r| compile_node(r, slot_of))
            .collect::<Result<Box<[Node]>, ConditionId>>()
    };
    Ok(match req {
        Requirement::And(reqs) => Node::And(children(reqs, slot_of)?),
        Requirement::Or(reqs) => Node::Or(children(reqs, slot_of)?),
        Requirement::Not(inner) => Node::Not(Box::new(compile_node(inner, slot_of)?)),
        Requirement::RequireGroup { min, reqs } => Node::Group {
            min: *min,
            reqs: children(reqs, slot_of)?,
        },
        Requirement::Condition(id) => Node::Leaf(slot_of(id).ok_or_else(|| id.clone())?),
    })
}

fn eval_node(
    node: &Node,
    depth: usize,
    statuses: &[TriState],
    mode: LogicMode,
    trace: &mut Vec<TraceStep>,
) -> Result<TriState, TooDeep> {
    if depth > MAX_DEPTH {
        return Err(TooDeep);
    }
    Ok(match node {
        Node::Leaf(slot) => {
            let status = usize::try_from(*slot)
                .ok()
                .and_then(|i| statuses.get(i))
                .copied()
                .unwrap_or(TriState::Unknown);
            trace.push(TraceStep {
                slot: *slot,
                status,
            });
            status
        }
        Node::Not(inner) => !eval_node(inner, depth + 1, statuses, mode, trace)?,
        Node::And(reqs) => {
            let mut acc = TriState::True;
            for r in reqs {
                acc = acc.and(eval_node(r, depth + 1, statuses, mode, trace)?, mode);
            }
            acc
        }
        Node::Or(reqs) => {
            let mut acc = TriState::False;
            for r in reqs {
                acc = acc.or(eval_node(r, depth + 1, statuses, mode, trace)?, mode);
            }
            acc
        }
        Node::Group { min, reqs } => {
            let (mut satisfied, mut unknown) = (0, 0);
            for r in reqs {
                match eval_node(r, depth + 1, statuses, mode, trace)? {
                    TriState::True => satisfied += 1,
                    TriState::Unknown => unknown += 1,
                    TriState::False => {}
                }
            }
            TriState::at_least(*min, satisfied, unknown)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shapes_match_the_reference() {
        let req: Requirement = serde_json::from_str(
            r#"{"And":[{"Condition":"a"},{"Not":{"Condition":"b"}},{"RequireGroup":{"min":1,"reqs":[]}}]}"#,
        )
        .unwrap();
        assert_eq!(req.depth(), 2);
        let back = serde_json::to_string(&req).unwrap();
        assert_eq!(
            back,
            r#"{"And":[{"Condition":"a"},{"Not":{"Condition":"b"}},{"RequireGroup":{"min":1,"reqs":[]}}]}"#
        );
        assert_eq!(
            serde_json::to_string(&TriState::Unknown).unwrap(),
            "\"Unknown\""
        );
        assert_eq!(
            serde_json::to_string(&GateOutcome::Unknown).unwrap(),
            "\"unknown\""
        );
        let extra =
            serde_json::from_str::<Requirement>(r#"{"RequireGroup":{"min":1,"reqs":[],"x":0}}"#);
        assert!(
            extra.is_err(),
            "unknown fields inside a RequireGroup are rejected"
        );
    }
}
