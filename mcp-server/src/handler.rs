//! The `rmcp` server handler: `initialize`, `tools/list` and `tools/call` for both transports.

use std::sync::Arc;
use std::time::Instant;

use decision_gate_core::access::{AccessEvent, AccessRefusal, AuditSink};
use decision_gate_core::{Action, DecisionGate};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;

use crate::admission::check_idempotency_key;
use crate::caller::{Caller, Transport};
use crate::error::ToolError;
use crate::metrics::Metrics;
use crate::tools::{self, ToolPolicy};

/// The `_meta` member of a `tools/call` request that carries the client's idempotency key.
pub const META_IDEMPOTENCY_KEY: &str = "idempotency_key";

/// What every connection of a server shares.
pub struct Shared {
    /// The service.
    pub gate: Arc<DecisionGate>,
    /// Feedback levels and other tool policy.
    pub policy: ToolPolicy,
    /// The audit sink, for calls refused before they reach the service.
    pub audit: Arc<dyn AuditSink>,
    /// Metrics.
    pub metrics: Metrics,
    tools: Vec<Tool>,
}

impl Shared {
    /// Shares a service with its policy, audit sink and metrics.
    #[must_use]
    pub fn new(
        gate: Arc<DecisionGate>,
        policy: ToolPolicy,
        audit: Arc<dyn AuditSink>,
        metrics: Metrics,
    ) -> Arc<Self> {
        Arc::new(Self {
            gate,
            policy,
            audit,
            metrics,
            tools: tools::catalogue(),
        })
    }

    /// Runs one operation for an authenticated caller, on any transport: the one dispatch,
    /// the call metrics, and the audit record of a failure the service did not audit itself
    /// (arguments refused before the call).
    ///
    /// # Errors
    /// [`ToolError`] for bad arguments and every service error.
    pub async fn invoke(
        &self,
        transport: Transport,
        caller: &Caller,
        action: Action,
        args: Value,
        started: Instant,
    ) -> Result<Value, ToolError> {
        self.observe(transport, caller, action, started, || {
            tools::call(&self.gate, &self.policy, caller, action, args)
        })
        .await
    }

    /// Runs `call`, one operation for an authenticated caller, and records its outcome like
    /// [`Self::invoke`]: for a transport that takes a typed answer ([`tools::TriggerAnswer`])
    /// instead of the JSON result.
    ///
    /// `call` makes the operation's future here rather than being one: a future passed in is
    /// held twice in this one (as the argument and as the awaited value), and every request's
    /// task is copied whole when it is spawned.
    ///
    /// # Errors
    /// The error `call` ends with.
    pub async fn observe<T, F>(
        &self,
        transport: Transport,
        caller: &Caller,
        action: Action,
        started: Instant,
        call: impl FnOnce() -> F,
    ) -> Result<T, ToolError>
    where
        F: Future<Output = Result<T, ToolError>>,
    {
        let outcome = call().await;
        self.record(transport, caller, action, outcome.as_ref().err(), started)
            .await;
        outcome
    }

    /// Records an operation's outcome, for operations that do not go through [`Self::invoke`]
    /// (a stream's opening): the call metrics, and the audit record of a failure the service
    /// did not audit itself.
    pub async fn record(
        &self,
        transport: Transport,
        caller: &Caller,
        action: Action,
        error: Option<&ToolError>,
        started: Instant,
    ) {
        match error {
            None => self.metrics.call(Some(action), "ok", started.elapsed()),
            Some(error) => {
                self.metrics
                    .call(Some(action), error.kind.as_str(), started.elapsed());
                if let Some(withheld) = &error.withheld {
                    tracing::error!(
                        kind = error.kind.as_str(),
                        action = action.name(),
                        request_id = caller.request_id.as_deref(),
                        correlation_id = caller.correlation_id.as_ref().map(|c| c.as_str()),
                        "call failed: {withheld}"
                    );
                }
                if !error.audited {
                    self.refuse(
                        transport,
                        refused_call(transport, caller, Some(action), error.message.clone()),
                    )
                    .await;
                }
            }
        }
    }

    /// Counts a refusal and audits it, unless it is one of the refusals counted into one
    /// audit event per window ([`crate::noise::SourceGate`]).
    pub async fn refused(
        &self,
        transport: Transport,
        refusal: &crate::admission::Refusal,
        seen: &crate::admission::Seen,
    ) {
        if refusal.audited {
            self.refuse(transport, refusal.event(transport, seen)).await;
        } else {
            self.metrics.refusal(transport.name(), refusal.refusal);
        }
    }

    /// Records a request refused before it reached the service; a sink failure is logged, as
    /// the request is refused either way.
    pub async fn refuse(&self, transport: Transport, event: AccessEvent) {
        self.metrics.refusal(transport.name(), event.refusal);
        if let Err(e) = self.audit.append_access(&event).await {
            tracing::error!(refusal = ?event.refusal, "access event not recorded: {e}");
        }
    }
}

/// One MCP server handler; cheap to clone, one per connection or request.
#[derive(Clone)]
pub struct McpHandler {
    shared: Arc<Shared>,
    transport: Transport,
}

impl McpHandler {
    /// A handler for `transport`.
    #[must_use]
    pub fn new(shared: Arc<Shared>, transport: Transport) -> Self {
        Self { shared, transport }
    }

    /// The caller: stdio is local; on HTTP the authentication layer put it in the request,
    /// whose context this call owns, so it is taken rather than copied.
    fn caller(&self, context: &mut RequestContext<RoleServer>) -> Option<Caller> {
        match self.transport {
            Transport::Stdio => Some(Caller::stdio()),
            Transport::Http | Transport::Grpc => context
                .extensions
                .get_mut::<axum::http::request::Parts>()
                .and_then(|parts| parts.extensions.remove::<Caller>()),
        }
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "decision-gate",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "Decision Gate evaluates evidence against a scenario's gates and decides whether \
                 a run may advance. Define a scenario, start a run, then call scenario_next; \
                 export a runpack to prove what was decided.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.shared.tools.clone()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared.tools.iter().find(|t| t.name == name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        mut context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        // Fail closed: an HTTP request that reached here without an authenticated caller was
        // not routed through the authentication layer.
        let Some(mut caller) = self.caller(&mut context) else {
            return Err(ErrorData::internal_error(
                "request reached the tool layer unauthenticated",
                None,
            ));
        };
        if caller.request_id.is_none() {
            caller.request_id = Some(request_id(&context));
        }
        let Some(action) = Action::from_name(&request.name) else {
            self.shared
                .metrics
                .call(None, "unknown_tool", started.elapsed());
            self.shared
                .refuse(
                    self.transport,
                    refused_call(self.transport, &caller, None, "unknown tool".to_owned()),
                )
                .await;
            return Err(ErrorData::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        };
        // An idempotency key in the request's `_meta` wins over the transport's header. rmcp
        // moves a request's `_meta` into its context; the parameters' copy is read too.
        if let Some(raw) = context.meta.0.get(META_IDEMPOTENCY_KEY).or_else(|| {
            request
                .meta
                .as_ref()
                .and_then(|meta| meta.0.get(META_IDEMPOTENCY_KEY))
        }) {
            match raw.as_str().map(|k| check_idempotency_key(k.as_bytes())) {
                Some(Ok(key)) => caller.idempotency_key = Some(key),
                refused => {
                    let reason = match refused {
                        Some(Err(reason)) => reason,
                        _ => "is not a string",
                    };
                    let message = format!("_meta.{META_IDEMPOTENCY_KEY} {reason}");
                    self.shared
                        .metrics
                        .call(Some(action), "invalid_input", started.elapsed());
                    self.shared
                        .refuse(
                            self.transport,
                            refused_call(self.transport, &caller, Some(action), message.clone()),
                        )
                        .await;
                    return Err(ErrorData::invalid_params(message, None));
                }
            }
        }
        let args = request.arguments.map_or(Value::Null, Value::Object);
        // rmcp spawns a task per request holding this future, and the task is copied whole
        // (spawned, moved into its cell): behind one allocation the call's kilobytes of state
        // stay put.
        let call = Box::pin(
            self.shared
                .invoke(self.transport, &caller, action, args, started),
        );
        let result = match call.await {
            Ok(value) => structured(value),
            Err(error) => error.into_result(),
        };
        Ok(result.into())
    }
}

/// A tool result as `structuredContent` with its text copy, as `CallToolResult::structured`
/// makes it but with the text written straight into a buffer: `Value`'s `Display` goes through
/// the formatting machinery token by token, which cost more than the rest of the copy.
fn structured(value: Value) -> CallToolResult {
    let Ok(text) = serde_json::to_string(&value) else {
        return CallToolResult::structured(value);
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

/// The audit record of a call refused at the tool layer (unknown tool, bad arguments).
fn refused_call(
    transport: Transport,
    caller: &Caller,
    tool: Option<Action>,
    detail: String,
) -> AccessEvent {
    AccessEvent {
        refusal: AccessRefusal::InvalidRequest,
        transport: transport.name().to_owned(),
        principal: Some(caller.principal.subject.clone()),
        peer: caller.peer.map(|p| p.ip().to_string()),
        tool: tool.map(|t| t.name().to_owned()),
        request_id: caller.request_id.clone(),
        correlation_id: caller.correlation_id.clone(),
        presented_hash: None,
        detail,
    }
}

/// The JSON-RPC id as a string, for the audit trail of transports without their own ids.
fn request_id(context: &RequestContext<RoleServer>) -> String {
    match serde_json::to_value(&context.id) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}
