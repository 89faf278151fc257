//! Defining and listing scenarios, and the cache of compiled plans.

use super::*;

/// The answer to `define_scenario`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefineResult {
    /// The scenario.
    pub scenario_id: ScenarioId,
    /// Its spec digest.
    pub spec_hash: HashDigest,
    /// False when an identical spec was already defined.
    pub created: bool,
}

impl DecisionGate {
    /// Parses a scenario spec from JSON text and defines it.
    ///
    /// # Errors
    /// As [`Self::define_scenario`], plus [`Error::InvalidSpec`] for malformed JSON, unknown
    /// fields or a document over the size limit, naming the JSON path.
    pub async fn define_scenario_json(
        &self,
        ctx: &RequestContext,
        text: &str,
    ) -> Result<DefineResult, Error> {
        // Authorize (and audit) before parsing: an unauthorized caller learns nothing about
        // its document. The resource id is read leniently, only to name the audit event.
        let lenient = serde_json::from_str::<serde_json::Value>(text).ok();
        let id = lenient
            .as_ref()
            .and_then(|v| v.get("scenario_id"))
            .and_then(|v| v.as_str())
            .unwrap_or("-")
            .to_owned();
        let limit = self.config.limits.max_spec_bytes;
        self.call(
            ctx,
            Action::ScenarioDefine,
            Resource::new("scenario", id),
            None,
            Vec::new(),
            async move |effects| {
                let spec = engine::parse_json::<ScenarioSpec>(text, limit)
                    .map_err(|e| Error::InvalidSpec(vec![e]))?;
                self.define_inner(ctx, spec, effects).await
            },
        )
        .await
    }

    /// Validates a spec, compiles it and stores it under the caller's tenant and namespace.
    /// Defining an identical spec again changes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] listing every broken rule; [`Error::AlreadyExists`] when the id
    /// holds a different spec.
    pub async fn define_scenario(
        &self,
        ctx: &RequestContext,
        spec: ScenarioSpec,
    ) -> Result<DefineResult, Error> {
        let request_hash = self.hash_request(&spec);
        self.call(
            ctx,
            Action::ScenarioDefine,
            Resource::new("scenario", spec.scenario_id.to_string()),
            request_hash,
            Vec::new(),
            async move |effects| self.define_inner(ctx, spec, effects).await,
        )
        .await
    }

    async fn define_inner(
        &self,
        ctx: &RequestContext,
        spec: ScenarioSpec,
        effects: &Effects,
    ) -> Result<(DefineResult, Committed), Error> {
        if spec.namespace_id != ctx.namespace_id {
            return Err(Error::invalid(
                "namespace_id",
                format!(
                    "spec is for namespace {}, request is for {}",
                    spec.namespace_id, ctx.namespace_id
                ),
            ));
        }
        let errors = engine::validate_spec(
            &spec,
            Some(ctx.tenant_id),
            Some(self.providers(ctx.tenant_id)),
            &self.config.limits,
        );
        if !errors.is_empty() {
            return Err(Error::InvalidSpec(errors));
        }
        let plan = Arc::new(
            Plan::compile(spec.clone(), self.config.hash_algorithm)
                .map_err(|e| Error::InvalidSpec(vec![e]))?,
        );
        let record = ScenarioRecord {
            tenant_id: ctx.tenant_id,
            spec,
            spec_hash: plan.spec_hash().clone(),
        };
        let outcome = self.scenarios.put(&record, effects).await?;
        let scenario_id = record.spec.scenario_id.clone();
        self.cache_plan(ctx.tenant_id, ctx.namespace_id, &scenario_id, plan);
        let result = DefineResult {
            scenario_id,
            spec_hash: record.spec_hash,
            created: outcome == PutOutcome::Created,
        };
        Ok((result, Committed::all_if(self.scenarios.owns_effects())))
    }

    /// Lists the scenarios of the caller's namespace.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a bad cursor or limit.
    pub async fn list_scenarios(
        &self,
        ctx: &RequestContext,
        page: PageRequest,
    ) -> Result<Page<ScenarioSummary>, Error> {
        let request_hash = self.hash_request(&page);
        self.call(
            ctx,
            Action::ScenariosList,
            Resource::new("namespace", ctx.namespace_id.to_string()),
            request_hash,
            Vec::new(),
            async move |_| {
                self.check_page(page.limit)?;
                self.scenarios
                    .list(ctx.tenant_id, ctx.namespace_id, &page)
                    .await
                    .map(|p| (p, Committed::NOTHING))
                    .map_err(Error::from)
            },
        )
        .await
    }

    fn cache_plan(
        &self,
        tenant: TenantId,
        namespace: NamespaceId,
        scenario: &ScenarioId,
        plan: Arc<Plan>,
    ) {
        if let Ok(mut plans) = self.plans.lock() {
            plans.put((tenant, namespace, scenario.clone()), plan);
        }
    }

    /// The compiled plan of a scenario, from the cache or the store; `expected` pins the hash.
    pub(super) async fn plan(
        &self,
        tenant: TenantId,
        namespace: NamespaceId,
        scenario_id: &ScenarioId,
        expected: Option<&HashDigest>,
    ) -> Result<Arc<Plan>, Error> {
        let key = (tenant, namespace, scenario_id.clone());
        let cached = self
            .plans
            .lock()
            .ok()
            .and_then(|mut p| p.get(&key).cloned());
        if let Some(plan) = cached.filter(|p| expected.is_none_or(|h| p.spec_hash() == h)) {
            return Ok(plan);
        }
        let record = self
            .scenarios
            .get(tenant, namespace, scenario_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "scenario",
                id: scenario_id.to_string(),
            })?;
        let plan = Plan::compile(record.spec, record.spec_hash.algorithm)
            .map_err(|e| Error::Corrupt(format!("stored scenario {scenario_id}: {e}")))?;
        if plan.spec_hash() != &record.spec_hash || expected.is_some_and(|h| h != plan.spec_hash())
        {
            return Err(Error::Corrupt(format!(
                "scenario {scenario_id}: spec hash does not match the stored spec"
            )));
        }
        let plan = Arc::new(plan);
        self.cache_plan(tenant, namespace, scenario_id, plan.clone());
        Ok(plan)
    }
}
