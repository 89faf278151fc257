//! External evidence providers: MCP servers that answer an `evidence_query` tool, reached as a
//! stdio child process or over Streamable HTTP. Each declares a capability contract (loaded and
//! compiled at start-up), every call has a timeout and a response cap, answers are placed in the
//! provider's configured trust lane at most, and, when signing keys are configured, an answer
//! counts only with a valid ed25519 signature over its evidence digest.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use decision_gate_core::evidence::{EvidenceContext, EvidenceError, EvidenceQuery};
use decision_gate_core::hashing::canonical_json;
use decision_gate_core::provider::{ProviderContract, ProviderError, ProviderTransport};
use decision_gate_core::runpack::VerifyingKey;
use decision_gate_core::{EvidenceProvider, EvidenceResult, HashAlgorithm, TrustLane};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::{RoleClient, ServiceExt as _};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Room for the JSON-RPC envelope around an answer, on top of `max_response_bytes`, when an
/// HTTP answer is capped as it arrives.
const ENVELOPE_BYTES: usize = 64 * 1024;

/// The tool an external provider must offer.
pub const EVIDENCE_TOOL: &str = "evidence_query";

/// Where an external provider runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A child process speaking MCP on its stdin/stdout.
    Stdio {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A Streamable HTTP MCP endpoint.
    Http {
        /// The endpoint URL.
        url: String,
        /// A bearer token to send, if any.
        bearer_token: Option<String>,
    },
}

/// How an external provider is reached and trusted.
#[derive(Clone, Debug)]
pub struct ExternalSettings {
    /// Where it runs.
    pub endpoint: Endpoint,
    /// Its capability contract.
    pub contract: ProviderContract,
    /// How long one query may take.
    pub timeout: Duration,
    /// The largest answer accepted.
    pub max_response_bytes: usize,
    /// The highest lane its answers are placed in.
    pub lane: TrustLane,
    /// When non-empty, answers must be signed by one of these keys.
    pub signing_keys: Vec<VerifyingKey>,
    /// The digest algorithm signatures cover.
    pub hash_algorithm: HashAlgorithm,
}

type Client = RunningService<RoleClient, ()>;

/// An open connection: the MCP client and, for a stdio provider, its child process, killed
/// (and reaped by tokio) when the connection is dropped.
struct Connection {
    client: Client,
    _child: Option<tokio::process::Child>,
}

/// An external MCP evidence provider. One connection, opened on first use and replaced after a
/// failure or timeout of a query on it; queries to one provider are serialised on it. A query
/// that times out waiting for its turn leaves the connection alone: only the one that timed out
/// on the connection replaces it.
pub struct ExternalProvider {
    settings: ExternalSettings,
    client: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for ExternalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalProvider")
            .field("provider_id", &self.settings.contract.provider_id)
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

impl ExternalProvider {
    /// A provider that connects on first use.
    #[must_use]
    pub fn new(settings: ExternalSettings) -> Self {
        Self {
            settings,
            client: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Connection, ProviderError> {
        let failed = |e: &dyn std::fmt::Display| ProviderError(format!("cannot connect: {e}"));
        match &self.settings.endpoint {
            Endpoint::Stdio { program, args } => {
                let mut child = tokio::process::Command::new(program)
                    .args(args)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                    .map_err(|e| failed(&e))?;
                let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
                    return Err(ProviderError("the child's pipes are missing".into()));
                };
                let transport = AsyncRwTransport::new_client(stdout, stdin)
                    .with_max_line_length(self.settings.max_response_bytes);
                // On a failed handshake `child` is dropped here: killed and reaped.
                let client = ().serve(transport).await.map_err(|e| failed(&e))?;
                Ok(Connection {
                    client,
                    _child: Some(child),
                })
            }
            Endpoint::Http { url, bearer_token } => {
                use rmcp::transport::StreamableHttpClientTransport;
                use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
                // Answers are capped while they arrive, before any parsing: the JSON-RPC
                // envelope may add a little to the evidence document `answer` checks exactly.
                let cap = self
                    .settings
                    .max_response_bytes
                    .saturating_add(ENVELOPE_BYTES);
                let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str())
                    .max_json_response_size(cap)
                    .max_sse_event_size(cap)
                    .max_error_response_size(ENVELOPE_BYTES);
                if let Some(token) = bearer_token {
                    config = config.auth_header(token.clone());
                }
                let transport = StreamableHttpClientTransport::from_config(config);
                let client = ().serve(transport).await.map_err(|e| failed(&e))?;
                Ok(Connection {
                    client,
                    _child: None,
                })
            }
        }
    }

    /// One query within the provider's timeout. Waiting for the connection counts against
    /// it but, when it runs out there, breaks nothing; a query that fails or times out on the
    /// connection, or gets an answer that is not one, drops the connection (and its child).
    async fn call(&self, arguments: Value) -> Result<EvidenceResult, ProviderError> {
        let Value::Object(arguments) = arguments else {
            return Err(ProviderError("arguments are not an object".into()));
        };
        let timeout = self.settings.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let late = || ProviderError(format!("no answer within {} ms", timeout.as_millis()));
        let mut slot = tokio::time::timeout_at(deadline, self.client.lock())
            .await
            .map_err(|_| late())?;
        let outcome = tokio::time::timeout_at(deadline, async {
            if slot.is_none() {
                *slot = Some(self.connect().await?);
            }
            let Some(connection) = slot.as_ref() else {
                return Err(ProviderError("no connection".into()));
            };
            let params = CallToolRequestParams::new(EVIDENCE_TOOL).with_arguments(arguments);
            let result = connection
                .client
                .call_tool(params)
                .await
                .map_err(|e| ProviderError(format!("{EVIDENCE_TOOL} failed: {e}")))?;
            self.answer(result)
        })
        .await
        .unwrap_or_else(|_| Err(late()));
        if outcome.is_err() {
            // The connection's state is unknown: the next query starts a fresh one.
            *slot = None;
        }
        outcome
    }

    /// Turns a tool result into an answer: size-checked, lane-capped and signature-checked.
    fn answer(&self, result: CallToolResult) -> Result<EvidenceResult, ProviderError> {
        if result.is_error == Some(true) {
            let text = result
                .content
                .iter()
                .find_map(|c| c.as_text().map(|t| t.text.clone()))
                .unwrap_or_default();
            return Err(ProviderError(format!(
                "the provider reported an error: {text}"
            )));
        }
        let document = match result.structured_content {
            Some(value) => value,
            None => {
                let text = result
                    .content
                    .iter()
                    .find_map(|c| c.as_text().map(|t| t.text.clone()))
                    .ok_or_else(|| ProviderError("the answer has no content".into()))?;
                serde_json::from_str(&text)
                    .map_err(|e| ProviderError(format!("the answer is not JSON: {e}")))?
            }
        };
        let size = serde_json::to_vec(&document).map_or(usize::MAX, |v| v.len());
        if size > self.settings.max_response_bytes {
            return Err(ProviderError(format!(
                "the answer is {size} bytes; the limit is {} bytes",
                self.settings.max_response_bytes
            )));
        }
        let mut answer: EvidenceResult = serde_json::from_value(document)
            .map_err(|e| ProviderError(format!("the answer is not an evidence result: {e}")))?;
        answer.lane = answer.lane.min(self.settings.lane);
        if !self.settings.signing_keys.is_empty()
            && let Err(message) = self.check_signature(&answer)
        {
            return Ok(EvidenceResult::failed(EvidenceError::new(
                "signature_invalid",
                message,
            )));
        }
        Ok(answer)
    }

    /// The answer must carry an ed25519 signature, by a configured key, over the canonical
    /// JSON of its value's digest.
    fn check_signature(&self, answer: &EvidenceResult) -> Result<(), String> {
        let signature = answer
            .signature
            .as_ref()
            .ok_or("the answer is not signed")?;
        if signature.scheme != "ed25519" {
            return Err(format!(
                "unsupported signature scheme {:?}",
                signature.scheme
            ));
        }
        let key = self
            .settings
            .signing_keys
            .iter()
            .find(|k| hex::encode(k.as_bytes()) == signature.key_id)
            .ok_or_else(|| format!("key {:?} is not trusted", signature.key_id))?;
        let value = answer
            .value
            .as_ref()
            .ok_or("a signed answer needs a value")?;
        let digest = value
            .digest(self.settings.hash_algorithm)
            .map_err(|e| e.to_string())?;
        let message = canonical_json(&digest).map_err(|e| e.to_string())?;
        let bytes: [u8; 64] = signature
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| "an ed25519 signature is 64 bytes".to_owned())?;
        key.verify_strict(&message, &ed25519_dalek::Signature::from_bytes(&bytes))
            .map_err(|_| "the signature does not verify".to_owned())
    }
}

#[async_trait]
impl EvidenceProvider for ExternalProvider {
    fn contract(&self) -> &ProviderContract {
        &self.settings.contract
    }

    fn transport(&self) -> ProviderTransport {
        ProviderTransport::Mcp
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        self.call(json!({ "query": query, "context": ctx })).await
    }
}

/// Shared handle, for registering in a [`decision_gate_core::ProviderRegistry`].
#[must_use]
pub fn provider(settings: ExternalSettings) -> Arc<dyn EvidenceProvider> {
    Arc::new(ExternalProvider::new(settings))
}

#[cfg(test)]
mod tests {
    use decision_gate_core::evidence::{EvidenceSignature, EvidenceValue};
    use decision_gate_core::runpack::SigningKey;
    use ed25519_dalek::Signer as _;

    use super::*;

    fn contract() -> ProviderContract {
        serde_json::from_value(json!({
            "provider_id": "ext", "description": "test", "checks": []
        }))
        .unwrap()
    }

    fn provider(lane: TrustLane, keys: Vec<VerifyingKey>) -> ExternalProvider {
        ExternalProvider::new(ExternalSettings {
            endpoint: Endpoint::Stdio {
                program: "unused".into(),
                args: Vec::new(),
            },
            contract: contract(),
            timeout: Duration::from_secs(1),
            max_response_bytes: 512,
            lane,
            signing_keys: keys,
            hash_algorithm: HashAlgorithm::Sha256,
        })
    }

    fn result(answer: &EvidenceResult) -> CallToolResult {
        CallToolResult::structured(serde_json::to_value(answer).unwrap())
    }

    fn signed(key: &SigningKey, value: Value, key_id: String) -> EvidenceResult {
        let mut answer = EvidenceResult::json(value.clone());
        let digest = EvidenceValue::Json(value)
            .digest(HashAlgorithm::Sha256)
            .unwrap();
        let signature = key.sign(&canonical_json(&digest).unwrap());
        answer.signature = Some(EvidenceSignature {
            scheme: "ed25519".into(),
            key_id,
            signature: signature.to_bytes().to_vec(),
        });
        answer
    }

    #[test]
    fn answers_are_capped_at_the_configured_lane() {
        let answer = provider(TrustLane::Asserted, Vec::new())
            .answer(result(&EvidenceResult::json(json!(true))))
            .unwrap();
        assert_eq!(answer.lane, TrustLane::Asserted);
        assert_eq!(answer.value, Some(EvidenceValue::Json(json!(true))));
    }

    #[test]
    fn oversized_and_error_results_are_provider_errors() {
        let p = provider(TrustLane::Verified, Vec::new());
        let big = EvidenceResult::json(json!("x".repeat(600)));
        assert!(
            p.answer(result(&big))
                .unwrap_err()
                .0
                .contains("limit is 512")
        );
        let failed = CallToolResult::error(vec![rmcp::model::ContentBlock::text("boom")]);
        assert!(p.answer(failed).unwrap_err().0.contains("boom"));
        let garbage = CallToolResult::structured(json!({ "value": 3 }));
        assert!(p.answer(garbage).is_err());
    }

    #[test]
    fn signed_answers_count_only_with_a_trusted_valid_signature() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key();
        let key_id = hex::encode(public.as_bytes());
        let p = provider(TrustLane::Verified, vec![public]);

        let good = p
            .answer(result(&signed(&key, json!(true), key_id.clone())))
            .unwrap();
        assert_eq!(good.error, None);
        assert_eq!(good.value, Some(EvidenceValue::Json(json!(true))));

        let mut tampered = signed(&key, json!(true), key_id.clone());
        tampered.value = Some(EvidenceValue::Json(json!(false)));
        let code = |a: EvidenceResult| a.error.map(|e| e.code);
        assert_eq!(
            code(p.answer(result(&tampered)).unwrap()),
            Some("signature_invalid".into())
        );

        let other = SigningKey::from_bytes(&[9; 32]);
        let untrusted = signed(
            &other,
            json!(true),
            hex::encode(other.verifying_key().as_bytes()),
        );
        assert_eq!(
            code(p.answer(result(&untrusted)).unwrap()),
            Some("signature_invalid".into())
        );

        let unsigned = EvidenceResult::json(json!(true));
        assert_eq!(
            code(p.answer(result(&unsigned)).unwrap()),
            Some("signature_invalid".into())
        );
    }
}
