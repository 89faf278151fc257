//! Precheck: a stage evaluated against caller-supplied evidence, touching nothing.

use super::*;

/// Simulates a stage against caller-supplied evidence, which always counts as `asserted`.
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
            ("scenario", req.scenario_id.to_string()),
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
                if let Some(extra) = req.evidence.keys().find(|id| !needed.contains(id)) {
                    return Err(Error::invalid(
                        format!("evidence.{extra}"),
                        "not a condition of this stage's gates",
                    ));
                }
                let results = plan
                    .stage_conditions(stage)
                    .map(|(id, _)| {
                        req.evidence
                            .get(id)
                            .cloned()
                            .unwrap_or_else(|| EvidenceResult::empty(TrustLane::Asserted))
                            .with_lane(TrustLane::Asserted)
                    })
                    .collect();
                let trigger_id =
                    TriggerId::new("precheck").map_err(|e| Error::Corrupt(e.to_string()))?;
                let outcome = plan.evaluate_stage(stage, results, &self.config, &trigger_id);
                let stage_id = plan.spec().stages[stage].stage_id.clone();
                let decision = match engine::decide(&plan, stage, &outcome.statuses()) {
                    Verdict::Advance { to, timeout } => DecisionOutcome::Advance {
                        from_stage: stage_id,
                        to_stage: plan.spec().stages[to].stage_id.clone(),
                        timeout,
                    },
                    Verdict::Complete => DecisionOutcome::Complete { stage_id },
                    Verdict::Hold(summary) => DecisionOutcome::Hold { summary },
                    Verdict::Fail(reason) => DecisionOutcome::Fail { reason },
                };
                let gate_evaluations = outcome
                    .gate_records
                    .into_iter()
                    .map(|r| r.evaluation)
                    .collect();
                Ok((
                    PrecheckResult {
                        decision,
                        gate_evaluations,
                    },
                    false,
                ))
            },
        )
        .await
    }
}
