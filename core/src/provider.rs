//! Evidence providers: the seam, capability contracts, and the registry define-time validation
//! checks scenarios against.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::comparator::Comparator;
use crate::evidence::{EvidenceContext, EvidenceQuery, EvidenceResult};
use crate::ids::{CheckId, ProviderId};
use crate::schema::{SchemaError, compile_schema};

/// What one check of a provider accepts and returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckContract {
    /// The check.
    pub check_id: CheckId,
    /// What it answers.
    pub description: String,
    /// JSON Schema (2020-12) of `params`; `true` or `{}` accepts anything.
    pub params_schema: Value,
    /// JSON Schema (2020-12) of the value it returns.
    pub result_schema: Value,
    /// The comparators a condition on this check may use.
    pub allowed_comparators: Vec<Comparator>,
}

/// A provider's capability contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderContract {
    /// The provider.
    pub provider_id: ProviderId,
    /// What it is.
    pub description: String,
    /// Its checks.
    pub checks: Vec<CheckContract>,
}

/// How a provider is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderTransport {
    /// Compiled into the server.
    Builtin,
    /// An external MCP server.
    Mcp,
}

impl ProviderTransport {
    /// The wire name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Mcp => "mcp",
        }
    }
}

/// A provider could not answer. The engine records it as a `provider_error` and the condition
/// as unknown; it never aborts the trigger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProviderError(pub String);

/// Answers evidence queries.
///
/// # Contract
/// 1. `contract` is fixed for the provider's lifetime.
/// 2. `query` answers only checks named in the contract, with params that passed the check's
///    params schema.
/// 3. A provider reads time only from `ctx.trigger_time`, never from a clock, so replaying the
///    same trigger gives the same answer whenever the outside world is unchanged.
/// 4. A value the provider cannot produce is an `Err` or a result with `error` set, never a
///    panic.
///
/// # Errors
/// [`ProviderError`] when the provider cannot answer.
///
/// # Cancellation
/// Dropping the future abandons the query; it must not leave the provider unusable.
#[async_trait]
pub trait EvidenceProvider: Send + Sync {
    /// The provider's capability contract.
    fn contract(&self) -> &ProviderContract;
    /// How the provider is reached: `builtin` (in process) unless it says otherwise.
    fn transport(&self) -> ProviderTransport {
        ProviderTransport::Builtin
    }
    /// Answers one query.
    async fn query(
        &self,
        query: &EvidenceQuery,
        ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError>;
}

/// A provider could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Another provider has this id.
    #[error("provider {0} is already registered")]
    Duplicate(ProviderId),
    /// A schema in the contract is not valid JSON Schema 2020-12.
    #[error("provider {provider}: check {check}: {error}")]
    InvalidContract {
        /// The provider.
        provider: ProviderId,
        /// The check.
        check: CheckId,
        /// What is wrong.
        error: SchemaError,
    },
}

struct Registered {
    provider: Arc<dyn EvidenceProvider>,
    params: BTreeMap<CheckId, jsonschema::Validator>,
}

/// The providers a service knows, with each check's params schema compiled once.
#[derive(Default)]
pub struct ProviderRegistry {
    providers: BTreeMap<ProviderId, Registered>,
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.providers.keys()).finish()
    }
}

impl ProviderRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider, compiling its params schemas.
    ///
    /// # Errors
    /// [`RegistryError`] for a duplicate id or an invalid schema.
    pub fn register(&mut self, provider: Arc<dyn EvidenceProvider>) -> Result<(), RegistryError> {
        let contract = provider.contract();
        let id = contract.provider_id.clone();
        if self.providers.contains_key(&id) {
            return Err(RegistryError::Duplicate(id));
        }
        let mut params = BTreeMap::new();
        for check in &contract.checks {
            let invalid = |error| RegistryError::InvalidContract {
                provider: id.clone(),
                check: check.check_id.clone(),
                error,
            };
            compile_schema(&check.result_schema).map_err(invalid)?;
            params.insert(
                check.check_id.clone(),
                compile_schema(&check.params_schema).map_err(invalid)?,
            );
        }
        self.providers.insert(id, Registered { provider, params });
        Ok(())
    }

    /// The provider with this id.
    #[must_use]
    pub fn get(&self, provider_id: &ProviderId) -> Option<&Arc<dyn EvidenceProvider>> {
        self.providers.get(provider_id).map(|r| &r.provider)
    }

    /// Every registered provider, by provider id.
    pub fn providers(&self) -> impl Iterator<Item = &Arc<dyn EvidenceProvider>> {
        self.providers.values().map(|r| &r.provider)
    }

    /// Every registered contract, by provider id.
    pub fn contracts(&self) -> impl Iterator<Item = &ProviderContract> {
        self.providers.values().map(|r| r.provider.contract())
    }

    /// The contract of one check of a registered provider.
    #[must_use]
    pub fn check(&self, provider_id: &ProviderId, check_id: &CheckId) -> Option<&CheckContract> {
        self.get(provider_id)?
            .contract()
            .checks
            .iter()
            .find(|c| &c.check_id == check_id)
    }

    /// Checks a query against the provider's contract: the provider and check exist and the
    /// params match the check's params schema. The error is the rule broken and the field
    /// (relative to the query's parent) it concerns.
    pub(crate) fn check_query(
        &self,
        query: &EvidenceQuery,
    ) -> Result<&CheckContract, (&'static str, String)> {
        let registered = self.providers.get(&query.provider_id).ok_or_else(|| {
            (
                "query.provider_id",
                format!("unknown provider {}", query.provider_id),
            )
        })?;
        let contract = registered
            .provider
            .contract()
            .checks
            .iter()
            .find(|c| c.check_id == query.check_id)
            .ok_or_else(|| {
                (
                    "query.check_id",
                    format!(
                        "provider {} has no check {}",
                        query.provider_id, query.check_id
                    ),
                )
            })?;
        if let Some(validator) = registered.params.get(&query.check_id) {
            let params = query.params.clone().unwrap_or(Value::Null);
            if let Some(error) = validator.iter_errors(&params).next() {
                let at = error.instance_path().to_string();
                return Err((
                    "query.params",
                    format!("does not match the check's params schema at '{at}': {error}"),
                ));
            }
        }
        Ok(contract)
    }

    /// Checks a query and comparator against the provider's contract; the error is the rule
    /// broken and the field (relative to the condition) it concerns.
    pub(crate) fn check_condition(
        &self,
        query: &EvidenceQuery,
        comparator: Comparator,
    ) -> Result<(), (&'static str, String)> {
        let contract = self.check_query(query)?;
        if !contract.allowed_comparators.contains(&comparator) {
            return Err((
                "comparator",
                format!(
                    "check {}.{} does not allow comparator {}",
                    query.provider_id,
                    query.check_id,
                    comparator.name()
                ),
            ));
        }
        Ok(())
    }
}

/// A provider whose answers the host program sets: facts the embedding application already
/// knows (a build passed, a reviewer approved). Each check returns the last value set for it, or
/// no value. Answers are `verified` unless set otherwise, because the host is trusted.
pub struct InMemoryEvidence {
    contract: ProviderContract,
    answers: RwLock<BTreeMap<CheckId, EvidenceResult>>,
}

impl std::fmt::Debug for InMemoryEvidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryEvidence")
            .field("provider_id", &self.contract.provider_id)
            .finish_non_exhaustive()
    }
}

impl InMemoryEvidence {
    /// A provider named `provider_id` offering `checks`, each accepting any params and every
    /// comparator.
    #[must_use]
    pub fn new(provider_id: ProviderId, checks: impl IntoIterator<Item = CheckId>) -> Self {
        let checks = checks
            .into_iter()
            .map(|check_id| CheckContract {
                check_id,
                description: "a fact set by the host program".to_owned(),
                params_schema: Value::Bool(true),
                result_schema: Value::Bool(true),
                allowed_comparators: Comparator::ALL.to_vec(),
            })
            .collect();
        Self {
            contract: ProviderContract {
                provider_id,
                description: "facts set by the host program".to_owned(),
                checks,
            },
            answers: RwLock::new(BTreeMap::new()),
        }
    }

    /// Sets the answer of `check_id`.
    pub fn set(&self, check_id: &CheckId, result: EvidenceResult) {
        if let Ok(mut answers) = self.answers.write() {
            answers.insert(check_id.clone(), result);
        }
    }

    /// Sets a verified JSON answer for `check_id`.
    pub fn set_json(&self, check_id: &CheckId, value: Value) {
        self.set(check_id, EvidenceResult::json(value));
    }
}

#[async_trait]
impl EvidenceProvider for InMemoryEvidence {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        _ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        let answers = self
            .answers
            .read()
            .map_err(|_| ProviderError("answers lock poisoned".to_owned()))?;
        Ok(answers
            .get(&query.check_id)
            .cloned()
            .unwrap_or_else(|| EvidenceResult::empty(crate::evidence::TrustLane::Verified)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_name_is_its_wire_form() {
        for t in [ProviderTransport::Builtin, ProviderTransport::Mcp] {
            assert_eq!(serde_json::to_value(t).unwrap(), t.name());
        }
    }
}
