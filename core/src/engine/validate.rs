//! Parsing and define-time validation of scenario specs. Every error names the JSON path of the
//! offending value and the rule it breaks.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;

use crate::ids::{ConditionId, GateId, StageId, TenantId};
use crate::provider::ProviderRegistry;
use crate::ret::{MAX_DEPTH, Requirement};
use crate::spec::{AdvanceTo, PacketPayload, ScenarioSpec, TimeoutPolicy};

use super::Limits;

/// One way a spec breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {rule}")]
pub struct SpecError {
    /// JSON path of the offending value, such as `stages[1].gates[0].requirement`.
    pub path: String,
    /// The rule broken.
    pub rule: String,
}

impl SpecError {
    fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            rule: rule.into(),
        }
    }
}

/// Parses JSON text into `T`, naming the JSON path of the first error (for an unknown field,
/// the path of that field) and refusing text longer than `max_bytes`.
///
/// # Errors
/// A [`SpecError`] for oversized, malformed or mistyped input.
pub fn parse_json<T: DeserializeOwned>(text: &str, max_bytes: usize) -> Result<T, SpecError> {
    if text.len() > max_bytes {
        return Err(SpecError::new(
            "$",
            format!(
                "document is {} bytes; the limit is {max_bytes} bytes",
                text.len()
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end().map_err(|e| SpecError::new("$", e.to_string()))?;
    Ok(value)
}

/// Converts an already parsed JSON value into `T`, naming the JSON path of the first error.
///
/// # Errors
/// A [`SpecError`] for mistyped input or unknown fields.
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> SpecError {
    // The path already ends at an unknown field's own name.
    let path = match e.path().to_string() {
        p if p == "." => "$".to_owned(),
        p => p,
    };
    SpecError::new(path, e.inner().to_string())
}

/// Checks every define-time rule and returns all violations (empty when the spec is valid).
///
/// Beyond the reference checks this rejects: RequireGroup `min` above its child count, trees
/// deeper than [`MAX_DEPTH`], branch rules naming a gate of another stage, `alternate_branch`
/// timeouts on non-branch stages, payloads over the limit, a zero timeout, and — when a
/// registry is given — unknown providers or checks, comparators the check does not allow, params
/// that fail the check's schema, and expected values of the wrong type. A spec bound to a tenant
/// (`default_tenant_id`) may only be defined by that tenant.
#[must_use]
pub fn validate_spec(
    spec: &ScenarioSpec,
    tenant_id: Option<TenantId>,
    providers: Option<&ProviderRegistry>,
    limits: &Limits,
) -> Vec<SpecError> {
    // Counts first: a spec over a count limit is refused on those alone, so the rules below
    // (and the errors they collect) never run over an unbounded list.
    let mut errors = count_errors(spec, limits);
    if !errors.is_empty() {
        return errors;
    }
    let mut err = |path: String, rule: String| errors.push(SpecError::new(path, rule));

    if let (Some(bound), Some(tenant)) = (spec.default_tenant_id, tenant_id)
        && bound != tenant
    {
        err(
            "default_tenant_id".into(),
            format!("scenario is bound to tenant {bound}, not {tenant}"),
        );
    }
    if spec.stages.is_empty() {
        err(
            "stages".into(),
            "a scenario needs at least one stage".into(),
        );
    }

    let mut conditions = BTreeMap::new();
    for (i, c) in spec.conditions.iter().enumerate() {
        let path = format!("conditions[{i}]");
        if conditions.insert(&c.condition_id, i).is_some() {
            err(
                format!("{path}.condition_id"),
                format!("duplicate condition id {}", c.condition_id),
            );
        }
        if let Some(rule) = c.comparator.expected_type_error(c.expected.as_ref()) {
            err(
                format!("{path}.expected"),
                format!("{rule} ({})", c.comparator.name()),
            );
        }
        if let Some(registry) = providers
            && let Err((field, rule)) = registry.check_condition(&c.query, c.comparator)
        {
            err(format!("{path}.{field}"), rule);
        }
    }

    let stage_ids: BTreeSet<&StageId> = spec.stages.iter().map(|s| &s.stage_id).collect();
    let mut seen_stages = BTreeSet::new();
    let mut seen_gates = BTreeSet::new();
    let mut seen_packets = BTreeSet::new();
    let mut requirement_errors = Vec::new();
    for (si, stage) in spec.stages.iter().enumerate() {
        let sp = format!("stages[{si}]");
        if !seen_stages.insert(&stage.stage_id) {
            err(
                format!("{sp}.stage_id"),
                format!("duplicate stage id {}", stage.stage_id),
            );
        }
        let stage_gates: BTreeSet<&GateId> = stage.gates.iter().map(|g| &g.gate_id).collect();
        for (gi, gate) in stage.gates.iter().enumerate() {
            let gp = format!("{sp}.gates[{gi}]");
            if !seen_gates.insert(&gate.gate_id) {
                err(
                    format!("{gp}.gate_id"),
                    format!(
                        "duplicate gate id {} (gate ids are unique across stages)",
                        gate.gate_id
                    ),
                );
            }
            requirement_errors.push((gp.clone(), &gate.requirement));
        }
        for (pi, packet) in stage.entry_packets.iter().enumerate() {
            let pp = format!("{sp}.entry_packets[{pi}]");
            if !seen_packets.insert(&packet.packet_id) {
                err(
                    format!("{pp}.packet_id"),
                    format!(
                        "duplicate packet id {} (packet ids are unique across stages)",
                        packet.packet_id
                    ),
                );
            }
            if let Some(rule) = payload_rule(&packet.payload, limits) {
                err(format!("{pp}.payload"), rule);
            }
        }
        let target_missing = |id: &StageId| !stage_ids.contains(id);
        match &stage.advance_to {
            AdvanceTo::Fixed { stage_id } if target_missing(stage_id) => {
                err(
                    format!("{sp}.advance_to.stage_id"),
                    format!("unknown stage {stage_id}"),
                );
            }
            AdvanceTo::Branch { branches, default } => {
                for (bi, rule) in branches.iter().enumerate() {
                    let bp = format!("{sp}.advance_to.branches[{bi}]");
                    if target_missing(&rule.next_stage_id) {
                        err(
                            format!("{bp}.next_stage_id"),
                            format!("unknown stage {}", rule.next_stage_id),
                        );
                    }
                    if !stage_gates.contains(&rule.gate_id) {
                        err(
                            format!("{bp}.gate_id"),
                            format!(
                                "gate {} is not a gate of stage {}",
                                rule.gate_id, stage.stage_id
                            ),
                        );
                    }
                }
                if let Some(d) = default.as_ref().filter(|d| target_missing(d)) {
                    err(
                        format!("{sp}.advance_to.default"),
                        format!("unknown stage {d}"),
                    );
                }
            }
            _ => {}
        }
        if stage.on_timeout == TimeoutPolicy::AlternateBranch
            && !matches!(stage.advance_to, AdvanceTo::Branch { .. })
        {
            err(
                format!("{sp}.on_timeout"),
                "alternate_branch needs advance_to of kind branch".into(),
            );
        }
        match stage.timeout.as_ref().map(|t| t.timeout_ms) {
            Some(0) => err(
                format!("{sp}.timeout.timeout_ms"),
                "must be at least 1".into(),
            ),
            // Larger deadlines cannot be added to a Unix-millisecond entry time.
            Some(ms) if ms > i64::MAX.unsigned_abs() => {
                err(
                    format!("{sp}.timeout.timeout_ms"),
                    format!("must be at most {}", i64::MAX),
                );
            }
            _ => {}
        }
    }
    for (gp, requirement) in requirement_errors {
        check_requirement(
            requirement,
            &format!("{gp}.requirement"),
            0,
            &conditions,
            &mut errors,
        );
    }
    errors
}

fn check_requirement(
    req: &Requirement,
    path: &str,
    depth: usize,
    conditions: &BTreeMap<&ConditionId, usize>,
    errors: &mut Vec<SpecError>,
) {
    if depth > MAX_DEPTH {
        errors.push(SpecError::new(
            path,
            format!("requirement tree is deeper than {MAX_DEPTH} levels"),
        ));
        return;
    }
    let children = |reqs: &[Requirement], key: &str, errors: &mut Vec<SpecError>| {
        for (i, r) in reqs.iter().enumerate() {
            check_requirement(
                r,
                &format!("{path}.{key}[{i}]"),
                depth + 1,
                conditions,
                errors,
            );
        }
    };
    match req {
        Requirement::And(reqs) => children(reqs, "And", errors),
        Requirement::Or(reqs) => children(reqs, "Or", errors),
        Requirement::Not(inner) => {
            check_requirement(inner, &format!("{path}.Not"), depth + 1, conditions, errors)
        }
        Requirement::RequireGroup { min, reqs } => {
            if usize::from(*min) > reqs.len() {
                errors.push(SpecError::new(
                    format!("{path}.RequireGroup.min"),
                    format!(
                        "min {min} is more than the {} requirements in the group",
                        reqs.len()
                    ),
                ));
            }
            children(reqs, "RequireGroup.reqs", errors);
        }
        Requirement::Condition(id) => {
            if !conditions.contains_key(id) {
                errors.push(SpecError::new(
                    format!("{path}.Condition"),
                    format!("unknown condition {id}"),
                ));
            }
        }
    }
}

/// Every list of the spec over its count limit, and every `expected` value holding an array
/// over `max_array_items`. Paths are built only for the lists that break a limit.
fn count_errors(spec: &ScenarioSpec, limits: &Limits) -> Vec<SpecError> {
    let mut errors = Vec::new();
    let mut count = |path: &dyn Fn() -> String, what: &str, n: usize, limit: usize| {
        if let Some(rule) = Limits::count_rule(what, n, limit) {
            errors.push(SpecError::new(path(), rule));
        }
    };
    let lists = limits.max_list_items;
    count(
        &|| "stages".into(),
        "stages",
        spec.stages.len(),
        limits.max_stages,
    );
    let conditions = spec.conditions.len();
    count(
        &|| "conditions".into(),
        "conditions",
        conditions,
        limits.max_conditions,
    );
    count(
        &|| "policies".into(),
        "policies",
        spec.policies.len(),
        lists,
    );
    count(&|| "schemas".into(), "schemas", spec.schemas.len(), lists);
    for (si, stage) in spec.stages.iter().enumerate() {
        let gates = stage.gates.len();
        count(
            &|| format!("stages[{si}].gates"),
            "gates",
            gates,
            limits.max_gates_per_stage,
        );
        let packets = stage.entry_packets.len();
        let limit = limits.max_packets_per_stage;
        count(
            &|| format!("stages[{si}].entry_packets"),
            "packets",
            packets,
            limit,
        );
        if let AdvanceTo::Branch { branches, .. } = &stage.advance_to {
            let path = || format!("stages[{si}].advance_to.branches");
            count(&path, "branch rules", branches.len(), lists);
        }
        for (pi, packet) in stage.entry_packets.iter().enumerate() {
            let path = || format!("stages[{si}].entry_packets[{pi}].visibility_labels");
            count(&path, "labels", packet.visibility_labels.len(), lists);
        }
        for (gi, gate) in stage.gates.iter().enumerate() {
            let path = || format!("stages[{si}].gates[{gi}].requirement");
            let nodes = gate.requirement.node_count();
            count(&path, "requirement nodes", nodes, limits.max_tree_nodes);
        }
    }
    let mut arrays = Vec::new();
    for (i, c) in spec.conditions.iter().enumerate() {
        let tags = c.policy_tags.len();
        count(
            &|| format!("conditions[{i}].policy_tags"),
            "tags",
            tags,
            lists,
        );
        if let Some((path, rule)) = c
            .expected
            .as_ref()
            .and_then(|v| limits.array_rule(v, &format!("conditions[{i}].expected")))
        {
            arrays.push(SpecError::new(path, rule));
        }
    }
    errors.extend(arrays);
    errors
}

/// The size rule for an inline payload, if it is broken.
fn payload_rule(payload: &PacketPayload, limits: &Limits) -> Option<String> {
    let size = payload.inline_size().unwrap_or(usize::MAX);
    (size > limits.max_payload_bytes).then(|| {
        format!(
            "payload is {size} bytes; the limit is {} bytes",
            limits.max_payload_bytes
        )
    })
}
