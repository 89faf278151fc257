//! Providers: their contracts, and direct evidence queries.

use super::*;
use crate::evidence::EvidenceQuery;
use crate::ids::{CheckId, ProviderId};
use crate::provider::{CheckContract, ProviderContract, ProviderTransport};

/// A provider as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSummary {
    /// The provider.
    pub provider_id: ProviderId,
    /// How it is reached.
    pub transport: ProviderTransport,
    /// What it is.
    pub description: String,
    /// Its checks.
    pub checks: Vec<CheckId>,
}

/// A provider's full contract and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderContractView {
    /// The provider.
    pub provider_id: ProviderId,
    /// How it is reached.
    pub transport: ProviderTransport,
    /// The contract.
    pub contract: ProviderContract,
    /// The digest of the contract's canonical JSON.
    pub contract_hash: HashDigest,
}

/// One check's contract and the digest of the provider contract it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSchemaView {
    /// The provider.
    pub provider_id: ProviderId,
    /// The check's contract.
    #[serde(flatten)]
    pub check: CheckContract,
    /// The digest of the provider's contract.
    pub contract_hash: HashDigest,
}

/// Asks one provider check directly, outside any trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQueryRequest {
    /// What to ask.
    pub query: EvidenceQuery,
    /// The run the question is about, as the provider sees it.
    pub run_id: RunId,
    /// The run's scenario.
    pub scenario_id: ScenarioId,
    /// The stage.
    pub stage_id: StageId,
    /// The trigger id the provider sees.
    pub trigger_id: TriggerId,
    /// The time the provider sees; providers never read a clock.
    pub trigger_time: Timestamp,
}

impl DecisionGate {
    /// Every registered provider and its checks, by provider id.
    ///
    /// # Errors
    /// Only refusals by the call bracket (authorization, quota).
    pub async fn list_providers(
        &self,
        ctx: &RequestContext,
    ) -> Result<Vec<ProviderSummary>, Error> {
        self.call(
            ctx,
            Action::ProvidersList,
            Resource::new("providers", "*".to_owned()),
            None,
            Vec::new(),
            async move |_| {
                let providers = self
                    .providers(ctx.tenant_id)
                    .providers()
                    .map(|p| {
                        let contract = p.contract();
                        ProviderSummary {
                            provider_id: contract.provider_id.clone(),
                            transport: p.transport(),
                            description: contract.description.clone(),
                            checks: contract.checks.iter().map(|c| c.check_id.clone()).collect(),
                        }
                    })
                    .collect();
                Ok((providers, Committed::NOTHING))
            },
        )
        .await
    }

    /// A provider's contract and its digest.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown provider.
    pub async fn provider_contract(
        &self,
        ctx: &RequestContext,
        provider_id: &ProviderId,
    ) -> Result<ProviderContractView, Error> {
        self.call(
            ctx,
            Action::ProviderContractGet,
            Resource::new("provider", provider_id.to_string()),
            None,
            Vec::new(),
            async move |_| {
                let provider = self.registered(ctx.tenant_id, provider_id)?;
                let contract = provider.contract().clone();
                Ok((
                    ProviderContractView {
                        provider_id: provider_id.clone(),
                        transport: provider.transport(),
                        contract_hash: self.contract_hash(&contract)?,
                        contract,
                    },
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }

    /// One check's contract.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown provider or check.
    pub async fn check_schema(
        &self,
        ctx: &RequestContext,
        provider_id: &ProviderId,
        check_id: &CheckId,
    ) -> Result<CheckSchemaView, Error> {
        self.call(
            ctx,
            Action::ProviderCheckSchemaGet,
            Resource::new("check", format!("{provider_id}.{check_id}")),
            None,
            Vec::new(),
            async move |_| {
                let contract = self.registered(ctx.tenant_id, provider_id)?.contract();
                let check = self
                    .providers(ctx.tenant_id)
                    .check(provider_id, check_id)
                    .ok_or_else(|| Error::NotFound {
                        what: "check",
                        id: format!("{provider_id}.{check_id}"),
                    })?;
                Ok((
                    CheckSchemaView {
                        provider_id: provider_id.clone(),
                        check: check.clone(),
                        contract_hash: self.contract_hash(contract)?,
                    },
                    Committed::NOTHING,
                ))
            },
        )
        .await
    }

    /// Asks a provider check directly. The answer is normalised as during a trigger (anchor
    /// policy, digest recomputed); a provider failure is an answer with `error` set, not an
    /// error. The raw value and its media type are withheld unless the service discloses raw
    /// evidence ([`DecisionGateBuilder::disclose_raw_evidence`]); the digest always remains.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the field for an unknown provider or check, or params
    /// that do not match the check's schema.
    pub async fn query_evidence(
        &self,
        ctx: &RequestContext,
        req: EvidenceQueryRequest,
    ) -> Result<EvidenceResult, Error> {
        let request_hash = self.hash_request(&req);
        let usage = vec![(UsageMetric::EvidenceQueries, 1)];
        let resource = Resource::new(
            "check",
            format!("{}.{}", req.query.provider_id, req.query.check_id),
        );
        self.call(
            ctx,
            Action::EvidenceQuery,
            resource,
            request_hash,
            usage,
            async move |_| {
                self.providers(ctx.tenant_id)
                    .check_query(&req.query)
                    .map_err(|(field, message)| Error::invalid(field, message))?;
                let provider = self.registered(ctx.tenant_id, &req.query.provider_id)?;
                let evidence_ctx = EvidenceContext {
                    tenant_id: ctx.tenant_id,
                    namespace_id: ctx.namespace_id,
                    run_id: req.run_id,
                    scenario_id: req.scenario_id,
                    stage_id: req.stage_id,
                    trigger_id: req.trigger_id,
                    trigger_time: req.trigger_time,
                    correlation_id: ctx.correlation_id.clone(),
                };
                let answer = provider
                    .query(&req.query, &evidence_ctx)
                    .await
                    .unwrap_or_else(|e| {
                        EvidenceResult::failed(EvidenceError::new("provider_error", e.to_string()))
                    });
                let mut answer =
                    engine::normalise_answer(&req.query.provider_id, answer, &self.config);
                self.withhold_raw(&mut answer);
                Ok((answer, Committed::NOTHING))
            },
        )
        .await
    }

    /// Clears an answer's raw value and media type unless the service discloses raw evidence;
    /// its digest and anchor remain.
    pub(super) fn withhold_raw(&self, answer: &mut EvidenceResult) {
        if !self.disclose_raw_evidence {
            answer.value = None;
            answer.content_type = None;
        }
    }

    /// `tenant`'s provider `provider_id`; another tenant's is not found, like a missing one.
    fn registered(
        &self,
        tenant: TenantId,
        provider_id: &ProviderId,
    ) -> Result<&Arc<dyn EvidenceProvider>, Error> {
        self.providers(tenant)
            .get(provider_id)
            .ok_or_else(|| Error::NotFound {
                what: "provider",
                id: provider_id.to_string(),
            })
    }

    fn contract_hash(&self, contract: &ProviderContract) -> Result<HashDigest, Error> {
        self.config
            .hash_algorithm
            .digest_json(contract)
            .map_err(|e| Error::Corrupt(format!("provider contract cannot be hashed: {e}")))
    }
}
