//! Precheck: a stage evaluated against caller-supplied evidence, touching nothing.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::ids::{SchemaId, SchemaVersion};

/// Simulates a stage against caller-supplied evidence, which always counts as `asserted`. The
/// evidence comes either per condition (`evidence`) or, in the reference form, as one `payload`
/// checked against a registered `data_shape` and mapped to conditions by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrecheckRequest {
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// The stage; the first when omitted.
    #[serde(default)]
    pub stage_id: Option<StageId>,
    /// Evidence per condition.
    #[serde(default)]
    pub evidence: BTreeMap<ConditionId, EvidenceResult>,
    /// The registered data shape `payload` must match; given together with `payload`.
    #[serde(default)]
    pub data_shape: Option<DataShapeId>,
    /// Asserted data: an object keyed by condition id, or any value when the stage has exactly
    /// one condition.
    #[serde(default)]
    pub payload: Option<Value>,
}

/// Names a registered data shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataShapeId {
    /// The schema.
    pub schema_id: SchemaId,
    /// Its version.
    pub version: SchemaVersion,
}

/// The answer to `precheck`: the decision the stage would make, and its gates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecheckResult {
    /// The would-be decision.
    pub decision: DecisionOutcome,
    /// Each gate's evaluation.
    pub gate_evaluations: Vec<GateEvaluation>,
}

impl DecisionGate {
    /// Evaluates a stage against caller-supplied evidence without touching any run. The
    /// evidence always counts as `asserted`, whatever lane it claims.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown scenario, [`Error::InvalidInput`] for an unknown stage.
    pub async fn precheck(
        &self,
        ctx: &RequestContext,
        req: PrecheckRequest,
    ) -> Result<PrecheckResult, Error> {
        let request_hash = self.hash_request(&req);
        self.call(
            ctx,
            Action::Precheck,
            Resource::new("scenario", req.scenario_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                let plan = self
                    .plan(ctx.tenant_id, ctx.namespace_id, &req.scenario_id, None)
                    .await?;
                let stage = match &req.stage_id {
                    None => 0,
                    Some(id) => plan
                        .stage_index(id)
                        .ok_or_else(|| Error::invalid("stage_id", format!("unknown stage {id}")))?,
                };
                let needed: Vec<&ConditionId> =
                    plan.stage_conditions(stage).map(|(id, _)| id).collect();
                self.check_asserted_arrays(&req.evidence, req.payload.as_ref())?;
                let (evidence, field) = match (req.data_shape, req.payload) {
                    (None, None) => (req.evidence, "evidence"),
                    (Some(shape), Some(payload)) if req.evidence.is_empty() => {
                        self.check_payload_shape(ctx, &shape, &payload).await?;
                        (payload_evidence(payload, &needed)?, "payload")
                    }
                    (Some(_), Some(_)) => {
                        return Err(Error::invalid(
                            "evidence",
                            "give either evidence or data_shape with payload, not both",
                        ));
                    }
                    (Some(_), None) => {
                        return Err(Error::invalid("payload", "data_shape needs a payload"));
                    }
                    (None, Some(_)) => {
                        return Err(Error::invalid(
                            "data_shape",
                            "a payload needs the data_shape it is checked against",
                        ));
                    }
                };
                let wanted: BTreeSet<&ConditionId> = needed.iter().copied().collect();
                if let Some(extra) = evidence.keys().find(|id| !wanted.contains(id)) {
                    return Err(Error::invalid(
                        format!("{field}.{extra}"),
                        "not a condition of this stage's gates",
                    ));
                }
                let results: Vec<EvidenceResult> = plan
                    .stage_conditions(stage)
                    .map(|(id, _)| {
                        evidence
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| EvidenceResult::empty(TrustLane::Asserted))
                            .with_lane(TrustLane::Asserted)
                    })
                    .collect();
                let trigger_id =
                    TriggerId::new("precheck").map_err(|e| Error::Corrupt(e.to_string()))?;
                let (verdict, gate_records) = if plan.work(stage, &results) <= INLINE_WORK {
                    transition::evaluate(&plan, stage, results, &self.config, &trigger_id)
                } else {
                    let (plan, config) = (plan.clone(), self.config.clone());
                    self.off_thread(move |stop| {
                        transition::evaluate_until(
                            &plan,
                            stage,
                            results,
                            &config,
                            &trigger_id,
                            stop,
                        )
                    })
                    .await?
                };
                // What a trigger would decide, before any disclosure.
                let decision = transition::outcome(&plan, stage, verdict, None);
                let gate_evaluations = gate_records.into_iter().map(|r| r.evaluation).collect();
                Ok((
                    PrecheckResult {
                        decision,
                        gate_evaluations,
                    },
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }
}

impl DecisionGate {
    /// Refuses caller-asserted evidence holding an array over `max_array_items`, before any
    /// comparator or schema sees it.
    fn check_asserted_arrays(
        &self,
        evidence: &BTreeMap<ConditionId, EvidenceResult>,
        payload: Option<&Value>,
    ) -> Result<(), Error> {
        let limits = &self.config.limits;
        let asserted = evidence
            .iter()
            .filter_map(|(id, result)| match &result.value {
                Some(crate::evidence::EvidenceValue::Json(value)) => {
                    Some((value, format!("evidence.{id}.value")))
                }
                _ => None,
            })
            .chain(payload.map(|p| (p, "payload".to_owned())));
        for (value, path) in asserted {
            if let Some((path, rule)) = limits.array_rule(value, &path) {
                return Err(Error::invalid(path, rule));
            }
        }
        Ok(())
    }

    /// Checks a precheck payload against its registered data shape.
    async fn check_payload_shape(
        &self,
        ctx: &RequestContext,
        shape: &DataShapeId,
        payload: &Value,
    ) -> Result<(), Error> {
        let record = self
            .schemas
            .get(
                ctx.tenant_id,
                ctx.namespace_id,
                &shape.schema_id,
                &shape.version,
            )
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "schema",
                id: format!("{}@{}", shape.schema_id, shape.version),
            })?;
        crate::schema::validate_instance(&record.schema, payload).map_err(|e| match e {
            crate::schema::SchemaError::Mismatch { path, message } => {
                Error::invalid(format!("payload{}", path.replace('/', ".")), message)
            }
            other => Error::Corrupt(format!(
                "registered schema {}@{}: {other}",
                shape.schema_id, shape.version
            )),
        })
    }
}

/// The reference mapping of a precheck payload to evidence: an object is keyed by condition id;
/// any other value is the one condition's evidence when the stage has exactly one.
fn payload_evidence(
    payload: Value,
    needed: &[&ConditionId],
) -> Result<BTreeMap<ConditionId, EvidenceResult>, Error> {
    match (payload, needed) {
        (Value::Object(members), _) => members
            .into_iter()
            .map(|(name, value)| {
                let id = ConditionId::new(name.as_str())
                    .map_err(|e| Error::invalid(format!("payload.{name}"), e.to_string()))?;
                Ok((id, EvidenceResult::json(value)))
            })
            .collect(),
        (value, [only]) => Ok(BTreeMap::from([(
            (*only).clone(),
            EvidenceResult::json(value),
        )])),
        (_, _) => Err(Error::invalid(
            "payload",
            format!(
                "must be an object keyed by condition id: the stage has {} conditions",
                needed.len()
            ),
        )),
    }
}
