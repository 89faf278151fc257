//! The `json` provider: a value read from a JSON or YAML file under a configured root, selected
//! with an RFC 9535 JSONPath. Every failure is an evidence error with a stable code; paths never
//! leave the root.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use serde_json_path::JsonPath;

use super::{answer, contract, refuse};
use crate::comparator::Comparator;
use crate::confine::{PathRefusal, confined};
use crate::evidence::{EvidenceContext, EvidenceQuery, EvidenceRef, EvidenceResult, TrustLane};
use crate::provider::{EvidenceProvider, ProviderContract, ProviderError};

/// Configuration of the `json` provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    /// The directory every `file` param is relative to.
    pub root: PathBuf,
    /// A short name for the root, recorded in anchors: 1 to 64 of `[a-z0-9_-]`.
    pub root_id: String,
    /// The largest file read.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Whether `.yaml` / `.yml` files are read.
    #[serde(default = "default_true")]
    pub allow_yaml: bool,
}

fn default_max_bytes() -> u64 {
    1024 * 1024
}

fn default_true() -> bool {
    true
}

/// A `json` provider configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("json provider: {field}: {message}")]
pub struct JsonConfigError {
    /// The configuration field.
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

/// The `json` provider.
#[derive(Debug)]
pub struct JsonProvider {
    config: JsonConfig,
    contract: ProviderContract,
}

impl JsonProvider {
    /// A `json` provider reading under `config.root`.
    ///
    /// # Errors
    /// [`JsonConfigError`] for an invalid `root_id`, a zero `max_bytes` or a root that is not a
    /// directory.
    pub fn new(config: JsonConfig) -> Result<Self, JsonConfigError> {
        let id_ok = !config.root_id.is_empty()
            && config.root_id.len() <= 64
            && config
                .root_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !id_ok {
            return Err(JsonConfigError {
                field: "root_id",
                message: "must be 1 to 64 of [a-z0-9_-]".into(),
            });
        }
        if config.max_bytes == 0 {
            return Err(JsonConfigError {
                field: "max_bytes",
                message: "must be at least 1".into(),
            });
        }
        if !config.root.is_dir() {
            return Err(JsonConfigError {
                field: "root",
                message: format!("{} is not a directory", config.root.display()),
            });
        }
        let params = json!({
            "type": "object",
            "properties": {
                "file": {"type": "string", "minLength": 1, "description": "a path relative to the configured root"},
                "jsonpath": {"type": "string", "minLength": 1, "description": "an RFC 9535 JSONPath; the whole document when omitted"}
            },
            "required": ["file"],
            "additionalProperties": false
        });
        let path = contract(
            "path",
            "The value a JSONPath selects in a JSON or YAML file: the node when one matches, an array when several do, no value when none does.",
            params,
            json!(true),
            &Comparator::ALL,
        );
        let contract = ProviderContract {
            provider_id: "json"
                .parse()
                .unwrap_or_else(|_| unreachable!("`json` is a valid id")),
            description: "Values from JSON and YAML files under one root.".into(),
            checks: vec![path],
        };
        Ok(Self { config, contract })
    }

    fn read(&self, file: &str, jsonpath: Option<&str>) -> EvidenceResult {
        let full = match confined(&self.config.root, file) {
            Ok(full) => full,
            Err(refusal @ PathRefusal::Absolute(_)) => {
                return refuse("absolute_path_forbidden", refusal.to_string());
            }
            Err(refusal @ (PathRefusal::NotPlain(_) | PathRefusal::NotNormal(_))) => {
                return refuse("path_invalid", refusal.to_string());
            }
            Err(refusal @ PathRefusal::Symlink(_)) => {
                return refuse("path_outside_root", refusal.to_string());
            }
        };
        let meta = match std::fs::metadata(&full) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return refuse("file_not_found", format!("{file} is not a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return refuse("file_not_found", format!("{file} does not exist"));
            }
            Err(e) => return refuse("file_read_failed", format!("{file}: {e}")),
        };
        if meta.len() > self.config.max_bytes {
            let limit = self.config.max_bytes;
            return refuse(
                "size_limit_exceeded",
                format!("{file} is {} bytes; the limit is {limit} bytes", meta.len()),
            );
        }
        let text = match std::fs::read_to_string(&full) {
            Ok(text) => text,
            Err(e) => return refuse("file_read_failed", format!("{file}: {e}")),
        };
        let yaml = file.ends_with(".yaml") || file.ends_with(".yml");
        let document: Value = if yaml {
            if !self.config.allow_yaml {
                return refuse(
                    "yaml_disabled",
                    "YAML files are not enabled for this provider",
                );
            }
            match serde_yaml_ng::from_str(&text) {
                Ok(v) => v,
                Err(e) => return refuse("invalid_yaml", format!("{file}: {e}")),
            }
        } else {
            match serde_json::from_str(&text) {
                Ok(v) => v,
                Err(e) => return refuse("invalid_json", format!("{file}: {e}")),
            }
        };
        let selected = match jsonpath {
            None => Some(document),
            Some(expression) => match JsonPath::parse(expression) {
                Err(e) => return refuse("invalid_jsonpath", format!("{expression}: {e}")),
                Ok(path) => {
                    let nodes: Vec<&Value> = path.query(&document).all();
                    match nodes.as_slice() {
                        [] => None,
                        [one] => Some((*one).clone()),
                        many => Some(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
                    }
                }
            },
        };
        let fields = json!({"root_id": self.config.root_id, "path": file});
        let mut result = match selected {
            Some(value) => answer(value, "file_path_rooted", &fields),
            None => EvidenceResult {
                evidence_anchor: Some(super::anchor("file_path_rooted", &fields)),
                ..EvidenceResult::empty(TrustLane::Verified)
            },
        };
        result.evidence_ref = Some(EvidenceRef {
            uri: format!("dg+file://{}/{file}", self.config.root_id),
        });
        result
    }
}

#[async_trait]
impl EvidenceProvider for JsonProvider {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        _ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        if query.check_id.as_str() != "path" {
            return Ok(refuse(
                "unknown_check",
                format!("json has no check {}", query.check_id),
            ));
        }
        let params = query.params.as_ref();
        let Some(file) = params.and_then(|p| p.get("file")).and_then(Value::as_str) else {
            return Ok(refuse("params_missing", "params.file is required"));
        };
        let jsonpath = match params.and_then(|p| p.get("jsonpath")) {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Ok(refuse("params_invalid", "params.jsonpath must be a string")),
        };
        Ok(self.read(file, jsonpath))
    }
}
