//! Limits on what one request, spec or run may make the server hold or compute: sizes in bytes,
//! counts of every list, and the concurrency of one trigger's evidence gathering. Each limit has
//! a default and a ceiling; a configuration outside `1..=ceiling` is refused before serving.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Size and count limits. Evidence over its byte limit makes the condition unknown; a payload,
/// document or list over its limit is refused with an error naming the field, the size or count
/// and the limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest evidence value (canonical JSON or raw bytes).
    pub max_evidence_bytes: usize,
    /// Largest packet, trigger or submission payload.
    pub max_payload_bytes: usize,
    /// Largest scenario spec document.
    pub max_spec_bytes: usize,
    /// Largest data-shape schema.
    pub max_schema_bytes: usize,
    /// Most evidence queries of one trigger in flight at once (a stage's conditions are
    /// queried concurrently up to this many).
    pub max_concurrent_queries: usize,
    /// Most stages in a scenario.
    pub max_stages: usize,
    /// Most gates in one stage.
    pub max_gates_per_stage: usize,
    /// Most conditions in a scenario.
    pub max_conditions: usize,
    /// Most nodes (operators and condition references) in one gate's requirement tree.
    pub max_tree_nodes: usize,
    /// Most entry packets of one stage.
    pub max_packets_per_stage: usize,
    /// Most dispatch targets of one run.
    pub max_dispatch_targets: usize,
    /// Most disclosures on entering one stage: its entry packets times the run's dispatch
    /// targets (each pair is hashed and journaled).
    pub max_disclosures: usize,
    /// Most items of any one array in an `expected` value or in caller-asserted evidence.
    pub max_array_items: usize,
    /// Most items of the spec's other lists: policies, schemas, policy tags, visibility labels,
    /// branch rules.
    pub max_list_items: usize,
    /// The largest page a list request may ask for.
    pub max_page_size: usize,
}

/// The largest `max_concurrent_queries` a configuration may ask for.
pub const MAX_CONCURRENT_QUERIES_LIMIT: usize = 1024;

const MIB: usize = 1024 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_evidence_bytes: MIB,
            max_payload_bytes: 2 * MIB,
            max_spec_bytes: 16 * MIB,
            max_schema_bytes: crate::schema::DEFAULT_MAX_SCHEMA_BYTES,
            max_concurrent_queries: 16,
            max_stages: 256,
            max_gates_per_stage: 64,
            max_conditions: 1024,
            max_tree_nodes: 1024,
            max_packets_per_stage: 64,
            max_dispatch_targets: 64,
            max_disclosures: 1024,
            max_array_items: 10_000,
            max_list_items: 256,
            max_page_size: crate::store::MAX_PAGE_SIZE as usize,
        }
    }
}

impl Limits {
    /// Every limit at its ceiling: the most permissive configuration a server accepts.
    pub const CEILING: Self = Self {
        max_evidence_bytes: 64 * MIB,
        max_payload_bytes: 64 * MIB,
        max_spec_bytes: 256 * MIB,
        max_schema_bytes: 64 * MIB,
        max_concurrent_queries: MAX_CONCURRENT_QUERIES_LIMIT,
        max_stages: 10_000,
        max_gates_per_stage: 10_000,
        max_conditions: 100_000,
        max_tree_nodes: 100_000,
        max_packets_per_stage: 10_000,
        max_dispatch_targets: 10_000,
        max_disclosures: 1_000_000,
        max_array_items: 1_000_000,
        max_list_items: 100_000,
        max_page_size: crate::store::MAX_PAGE_SIZE as usize,
    };

    /// Every limit as `(name, value)`, in declaration order: the one list the configuration
    /// check and the benchmark at the ceilings read.
    #[must_use]
    pub fn table(&self) -> [(&'static str, usize); 15] {
        [
            ("max_evidence_bytes", self.max_evidence_bytes),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_spec_bytes", self.max_spec_bytes),
            ("max_schema_bytes", self.max_schema_bytes),
            ("max_concurrent_queries", self.max_concurrent_queries),
            ("max_stages", self.max_stages),
            ("max_gates_per_stage", self.max_gates_per_stage),
            ("max_conditions", self.max_conditions),
            ("max_tree_nodes", self.max_tree_nodes),
            ("max_packets_per_stage", self.max_packets_per_stage),
            ("max_dispatch_targets", self.max_dispatch_targets),
            ("max_disclosures", self.max_disclosures),
            ("max_array_items", self.max_array_items),
            ("max_list_items", self.max_list_items),
            ("max_page_size", self.max_page_size),
        ]
    }

    /// The limits outside `1..=ceiling`, as `(name, rule)`.
    #[must_use]
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.table()
            .into_iter()
            .zip(Self::CEILING.table())
            .filter(|&((_, value), (_, ceiling))| value == 0 || value > ceiling)
            .map(|((name, value), (_, ceiling))| {
                (name, format!("must be 1..={ceiling}, not {value}"))
            })
            .collect()
    }

    /// `count` against `limit`, as the rule an over-long list breaks.
    pub(crate) fn count_rule(what: &str, count: usize, limit: usize) -> Option<String> {
        (count > limit).then(|| format!("{count} {what}; the limit is {limit}"))
    }

    /// The first array in `value` with more than `max_array_items` items, as the JSON path
    /// below `path` and the rule it breaks. One pass over the value, without recursion.
    #[must_use]
    pub fn array_rule(&self, value: &Value, path: &str) -> Option<(String, String)> {
        let mut pending: Vec<(&Value, String)> = vec![(value, path.to_owned())];
        while let Some((value, path)) = pending.pop() {
            match value {
                Value::Array(items) => {
                    if let Some(rule) =
                        Self::count_rule("array items", items.len(), self.max_array_items)
                    {
                        return Some((path, rule));
                    }
                    // Paths are built only for containers, so a flat array costs no strings.
                    pending.extend(
                        items
                            .iter()
                            .enumerate()
                            .filter(|(_, v)| v.is_array() || v.is_object())
                            .map(|(i, v)| (v, format!("{path}[{i}]"))),
                    );
                }
                Value::Object(fields) => pending.extend(
                    fields
                        .iter()
                        .filter(|(_, v)| v.is_array() || v.is_object())
                        .map(|(k, v)| (v, format!("{path}.{k}"))),
                ),
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_names_every_field_once_and_defaults_are_within_their_ceilings() {
        let defaults = Limits::default();
        assert!(defaults.problems().is_empty(), "{:?}", defaults.problems());
        assert!(Limits::CEILING.problems().is_empty());
        let serialised = serde_json::to_value(&defaults).unwrap();
        let fields = serialised.as_object().unwrap();
        let table = defaults.table();
        assert_eq!(fields.len(), table.len(), "every field is in the table");
        for ((name, value), (_, ceiling)) in table.into_iter().zip(Limits::CEILING.table()) {
            assert_eq!(fields[name], json!(value), "{name}");
            assert!(
                ceiling >= value,
                "{name}: the ceiling is at least the default"
            );
        }
    }

    #[test]
    fn zero_and_values_over_the_ceiling_are_problems() {
        let limits = Limits {
            max_stages: 0,
            max_array_items: 1_000_001,
            ..Limits::default()
        };
        assert_eq!(
            limits.problems(),
            vec![
                ("max_stages", "must be 1..=10000, not 0".to_owned()),
                (
                    "max_array_items",
                    "must be 1..=1000000, not 1000001".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn the_first_long_array_is_named_by_its_path() {
        let limits = Limits {
            max_array_items: 3,
            ..Limits::default()
        };
        let fine = json!({"a": [1, 2, 3], "b": [[1, 2, 3], {"c": [1]}]});
        assert_eq!(limits.array_rule(&fine, "expected"), None);
        let nested = json!({"a": [1], "b": [[1], {"c": [1, 2, 3, 4]}]});
        assert_eq!(
            limits.array_rule(&nested, "expected"),
            Some((
                "expected.b[1].c".to_owned(),
                "4 array items; the limit is 3".to_owned()
            ))
        );
        assert_eq!(
            limits.array_rule(&json!([1, 2, 3, 4]), "evidence.x"),
            Some((
                "evidence.x".to_owned(),
                "4 array items; the limit is 3".to_owned()
            ))
        );
    }
}
