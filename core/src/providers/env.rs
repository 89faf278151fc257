//! The `env` provider: one environment variable, behind allow and deny lists. With `overrides`
//! set, the process environment is never read, which makes answers deterministic.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{answer, contract, refuse};
use crate::comparator::Comparator::*;
use crate::evidence::{EvidenceContext, EvidenceQuery, EvidenceResult, TrustLane};
use crate::provider::{EvidenceProvider, ProviderContract, ProviderError};

/// Configuration of the `env` provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvConfig {
    /// The only keys that may be read; empty (the default) allows none, `None` allows all.
    pub allowlist: Option<BTreeSet<String>>,
    /// Keys that may never be read (checked first).
    pub denylist: BTreeSet<String>,
    /// The longest key accepted.
    pub max_key_bytes: usize,
    /// The longest value returned; longer values are an error.
    pub max_value_bytes: usize,
    /// When set, the only variables there are: the process environment is not read.
    pub overrides: Option<BTreeMap<String, String>>,
}

impl Default for EnvConfig {
    fn default() -> Self {
        Self {
            // Nothing is readable until the operator allows it: variables often hold secrets,
            // and an answer is stored in the journal and in runpacks.
            allowlist: Some(BTreeSet::new()),
            denylist: BTreeSet::new(),
            max_key_bytes: 255,
            max_value_bytes: 64 * 1024,
            overrides: None,
        }
    }
}

/// The `env` provider.
#[derive(Debug)]
pub struct EnvProvider {
    config: EnvConfig,
    contract: ProviderContract,
}

impl EnvProvider {
    /// An `env` provider with `config`.
    #[must_use]
    pub fn new(config: EnvConfig) -> Self {
        let params = json!({
            "type": "object",
            "properties": {"key": {"type": "string", "minLength": 1, "maxLength": config.max_key_bytes}},
            "required": ["key"],
            "additionalProperties": false
        });
        let get = contract(
            "get",
            "The value of one environment variable; no value when it is unset.",
            params,
            json!({"type": "string"}),
            &[Equals, NotEquals, Contains, InSet, Exists, NotExists],
        );
        let contract = ProviderContract {
            provider_id: "env"
                .parse()
                .unwrap_or_else(|_| unreachable!("`env` is a valid id")),
            description: "Environment variables behind allow and deny lists.".into(),
            checks: vec![get],
        };
        Self { config, contract }
    }

    /// The variable's value: `Ok(None)` when unset, `Err` when set but not UTF-8.
    fn lookup(&self, key: &str) -> Result<Option<String>, ()> {
        match &self.config.overrides {
            Some(overrides) => Ok(overrides.get(key).cloned()),
            None => std::env::var_os(key)
                .map(|v| v.into_string().map_err(drop))
                .transpose(),
        }
    }
}

#[async_trait]
impl EvidenceProvider for EnvProvider {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        _ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        if query.check_id.as_str() != "get" {
            return Ok(refuse(
                "unknown_check",
                format!("env has no check {}", query.check_id),
            ));
        }
        let Some(key) = query
            .params
            .as_ref()
            .and_then(|p| p.get("key"))
            .and_then(|k| k.as_str())
        else {
            return Ok(refuse("params_missing", "params.key is required"));
        };
        if key.is_empty() || key.len() > self.config.max_key_bytes || key.contains(['=', '\0']) {
            return Ok(refuse(
                "params_invalid",
                format!(
                    "params.key must be 1 to {} bytes without '=' or NUL",
                    self.config.max_key_bytes
                ),
            ));
        }
        let allowed = self
            .config
            .allowlist
            .as_ref()
            .is_none_or(|allow| allow.contains(key));
        if self.config.denylist.contains(key) || !allowed {
            return Ok(refuse(
                "key_denied",
                format!("reading {key} is not allowed"),
            ));
        }
        let fields = json!({"key": key});
        match self.lookup(key) {
            // An unset variable has no value, so `exists` / `not_exists` can tell.
            Err(()) => Ok(refuse(
                "value_not_utf8",
                format!("{key} is set but is not UTF-8"),
            )),
            Ok(None) => Ok(EvidenceResult {
                evidence_anchor: Some(super::anchor("env", &fields)),
                ..EvidenceResult::empty(TrustLane::Verified)
            }),
            Ok(Some(value)) if value.len() > self.config.max_value_bytes => Ok(refuse(
                "value_too_large",
                format!(
                    "{key} is {} bytes; the limit is {} bytes",
                    value.len(),
                    self.config.max_value_bytes
                ),
            )),
            Ok(Some(value)) => Ok(answer(json!(value), "env", &fields)),
        }
    }
}
