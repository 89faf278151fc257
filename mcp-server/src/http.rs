//! The Streamable HTTP transport: `/mcp` behind the request guard (correlation id, in-flight
//! limit, authentication, rate limit, body limit), plus `/healthz`, `/readyz` and `/metrics`.
//!
//! Every refusal gets its own JSON-RPC error code, HTTP status, `kind` and audit event:
//!
//! | refusal | HTTP | code |
//! |---|---|---|
//! | invalid correlation id | 400 | -32073 |
//! | overloaded (in-flight limit) | 503 | -32072 |
//! | unauthenticated | 401 | -32001 |
//! | rate limited | 429 | -32071 |
//! | body too large | 413 | -32070 |
//! | authentication unavailable | 503 | -32074 |
//! | invalid idempotency key | 400 | -32602 |
//! | body not sent within `body_timeout_ms` | 408 | -32075 |

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use decision_gate_core::access::AccessRefusal;
use decision_gate_core::identity::{Credentials, PeerCertificate};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;

use crate::admission::{self, Admission, Refusal, Seen};
use crate::caller::{Caller, Transport};
use crate::handler::{McpHandler, Shared};
use crate::tls;

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// How the HTTP transport is set up.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Correlation id, in-flight limit, authentication and rate limit, shared with the other
    /// listeners of the server.
    pub admission: Arc<Admission>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// How long a client may take to open a connection (its first byte or TLS handshake) and
    /// to send an HTTP/1 request's headers.
    pub header_timeout: Duration,
    /// Accepted `Host` names besides loopback.
    pub allowed_hosts: Vec<String>,
    /// TLS, when this server terminates it.
    pub tls: Option<tls::TlsSettings>,
    /// Routes served beside `/mcp`, outside its guard ([`crate::ServerBuilder::routes`]).
    pub routes: Router,
    /// Whether `GET /metrics` requires authentication.
    pub metrics_auth: bool,
}

struct Guard {
    shared: Arc<Shared>,
    admission: Arc<Admission>,
    max_body_bytes: usize,
    /// `Host` names accepted: loopback, the bind address and `server.allowed_hosts`.
    hosts: Vec<String>,
    metrics_auth: bool,
}

/// Server-issued request ids: `dg-<16 hex boot id>-<16 hex counter>`, never taken from the
/// client.
#[derive(Clone)]
pub(crate) struct RequestIds {
    boot: u64,
    next: Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("dg-{:016x}-{n:016x}", self.boot))
            .ok()
            .map(RequestId::new)
    }
}

impl RequestIds {
    /// Ids of a new boot.
    pub(crate) fn new() -> Self {
        Self {
            boot: boot_id(),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

fn boot_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The whole HTTP application, serving the Decision Gate tools.
pub fn router(shared: Arc<Shared>, options: &HttpOptions, shutdown: &CancellationToken) -> Router {
    let handler_shared = shared.clone();
    router_with(shared, options, shutdown, move || {
        McpHandler::new(handler_shared.clone(), Transport::Http)
    })
}

/// The HTTP application with any MCP handler behind the same guard and layers: what
/// [`router`] serves, and what the benchmark serves its echo tool with, so both measure the
/// same transport.
pub fn router_with<H, F>(
    shared: Arc<Shared>,
    options: &HttpOptions,
    shutdown: &CancellationToken,
    make_handler: F,
) -> Router
where
    H: rmcp::ServerHandler,
    F: Fn() -> H + Send + Sync + 'static,
{
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut mcp_config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts.clone());
    // Stateless: every POST carries its own request and gets its answer as JSON, so any
    // replica can serve any request.
    mcp_config.legacy_session_mode = false;
    mcp_config.json_response = true;
    mcp_config.sse_keep_alive = None;
    mcp_config.max_request_body_bytes = options.max_body_bytes;
    mcp_config.cancellation_token = shutdown.child_token();
    let mcp = StreamableHttpService::new(
        move || Ok(make_handler()),
        Arc::new(LocalSessionManager::default()),
        mcp_config,
    );
    let guard = Arc::new(Guard {
        shared: shared.clone(),
        admission: options.admission.clone(),
        max_body_bytes: options.max_body_bytes,
        hosts,
        metrics_auth: options.metrics_auth,
    });
    let ids = RequestIds::new();
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared.clone())
        .layer(middleware::from_fn_with_state(guard.clone(), guard_metrics));
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(middleware::from_fn_with_state(guard, guard_mcp))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
        .merge(metrics)
        .merge(options.routes.clone())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, ids))
        .layer(middleware::map_request(strip_client_request_id))
}

/// Request ids are the server's: a client's `x-request-id` is dropped before one is issued.
pub(crate) async fn strip_client_request_id(mut req: Request) -> Request {
    req.headers_mut().remove(X_REQUEST_ID);
    req
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready when the run store answers. A refusal names a stable reason code (the error's kind),
/// never the driver's text, which can name hosts, users and files: that goes to the log.
async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    match shared.gate.ready().await {
        Ok(()) => axum::Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            let reason = e.kind().as_str();
            tracing::warn!(reason, error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({ "status": "not_ready", "reason": reason })),
            )
                .into_response()
        }
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}

/// `GET /metrics`: only under an allowed `Host` (DNS-rebinding protection, as `/mcp`), and,
/// with `server.metrics.require_auth`, only for an authenticated caller; refusals are audited.
async fn guard_metrics(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.uri()
                .authority()
                .map(axum::http::uri::Authority::as_str)
        });
    if !host.is_some_and(|h| host_allowed(h, &guard.hosts)) {
        return (StatusCode::FORBIDDEN, "the Host header is not allowed").into_response();
    }
    if guard.metrics_auth {
        let seen = Seen::of(&req);
        let credentials = Credentials {
            transport: Transport::Http.name(),
            peer: seen.peer,
            headers: req.headers(),
            certificate: req.extensions().get::<PeerCertificate>(),
        };
        if let Err(refusal) = guard.admission.authenticate(&credentials).await {
            return refuse(&guard, &seen, refusal, None).await;
        }
    }
    next.run(req).await
}

/// Whether a `Host` value (with or without a port) names an allowed host.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        // `[::1]:8080` -> `[::1]`
        Some(rest) => rest
            .split_once(']')
            .map_or(host, |(ip, _)| &host[..ip.len() + 2]),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    allowed
        .iter()
        .any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

/// The HTTP status and JSON-RPC code of a refusal.
fn status_and_code(refusal: AccessRefusal) -> (StatusCode, i64) {
    match refusal {
        AccessRefusal::InvalidCorrelationId => (StatusCode::BAD_REQUEST, -32073),
        AccessRefusal::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, -32072),
        AccessRefusal::Unauthenticated => (StatusCode::UNAUTHORIZED, -32001),
        AccessRefusal::RateLimited => (StatusCode::TOO_MANY_REQUESTS, -32071),
        AccessRefusal::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, -32070),
        AccessRefusal::InvalidRequest => (StatusCode::BAD_REQUEST, -32602),
        AccessRefusal::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, -32074),
        AccessRefusal::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, -32075),
    }
}

async fn guard_mcp(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let mut seen = Seen::of(&req);
    match admit(&guard, &mut seen, req).await {
        Ok((req, admitted)) => {
            let mut response = next.run(req).await;
            if let Some((refusal, code)) = admitted.malformed(&response) {
                return refuse(&guard, &seen, refusal, Some(code)).await;
            }
            if let Some(id) = seen
                .correlation_id
                .as_ref()
                .and_then(|c| HeaderValue::from_str(c.as_str()).ok())
            {
                response.headers_mut().insert(X_CORRELATION_ID, id);
            }
            response
        }
        Err(refusal) => {
            // The body was left unread (or read only in part), so the connection cannot carry
            // another request; saying so keeps a pooling client from reusing it mid-close.
            let mut response = refuse(&guard, &seen, refusal, None).await;
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Runs every check in order; on success the request carries its [`Caller`] and a buffered
/// body, and [`Admitted`] holds the permit until the response is produced.
async fn admit(
    guard: &Guard,
    seen: &mut Seen,
    req: Request,
) -> Result<(Request, Admitted), Refusal> {
    seen.correlation_id = guard.admission.correlation_id(
        req.headers()
            .get(X_CORRELATION_ID)
            .map(HeaderValue::as_bytes),
        "x-correlation-id",
    )?;
    let idempotency_key = guard.admission.idempotency_key(
        req.headers()
            .get(admission::IDEMPOTENCY_KEY)
            .map(HeaderValue::as_bytes),
    )?;
    let credentials = Credentials {
        transport: Transport::Http.name(),
        peer: seen.peer,
        headers: req.headers(),
        certificate: req.extensions().get::<PeerCertificate>(),
    };
    let who = guard.admission.authenticate(&credentials).await?;
    let max = guard.max_body_bytes;
    let too_large = || format!("the request body exceeds {max} bytes");
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(Refusal {
            principal: Some(who.principal.subject.clone()),
            ..Refusal::new(AccessRefusal::TooLarge, too_large())
        });
    }
    let (mut parts, body) = req.into_parts();
    // The body is read here, under the limit and the body timeout, whatever the framing
    // (chunked bodies declare no length), before the request takes an in-flight slot.
    let bytes = guard
        .admission
        .read_body(&who, Body::new(body), max, too_large)
        .await?;
    let admission::Admitted { principal, permit } = guard.admission.admit(who)?;
    let admitted = Admitted {
        json_post: parts.method == axum::http::Method::POST && is_json(&parts.headers),
        body: bytes.clone(),
        principal: principal.subject.clone(),
        _permit: permit,
    };
    parts.extensions.insert(Caller {
        principal,
        transport: Transport::Http,
        peer: seen.peer,
        request_id: seen.request_id.clone(),
        correlation_id: seen.correlation_id.clone(),
        idempotency_key,
    });
    Ok((Request::from_parts(parts, Body::from(bytes)), admitted))
}

/// What the guard keeps of an admitted request until its response is out: the in-flight permit,
/// and the body, to explain a malformed one in JSON-RPC terms.
struct Admitted {
    json_post: bool,
    body: axum::body::Bytes,
    principal: String,
    _permit: admission::Permit,
}

impl Admitted {
    /// The MCP layer answers a body that is not JSON-RPC with plain text; the caller gets a
    /// JSON-RPC error instead. Checked only on that error path, so well-formed requests are
    /// parsed once.
    fn malformed(&self, response: &Response) -> Option<(Refusal, i64)> {
        let plain = !response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !(self.json_post && response.status().is_client_error() && plain) {
            return None;
        }
        check_json_rpc(&self.body).err().map(|(code, message)| {
            let refusal = Refusal {
                principal: Some(self.principal.clone()),
                ..Refusal::new(AccessRefusal::InvalidRequest, message)
            };
            (refusal, code)
        })
    }
}

/// Audits a refusal and answers it: its HTTP status, and a JSON-RPC error with the refusal's
/// code (or `code`, for a malformed message) and kind.
async fn refuse(guard: &Guard, seen: &Seen, refusal: Refusal, code: Option<i64>) -> Response {
    guard.shared.refused(Transport::Http, &refusal, seen).await;
    let (status, refusal_code) = status_and_code(refusal.refusal);
    let mut data =
        json!({ "kind": refusal.refusal.kind().as_str(), "retryable": refusal.retryable() });
    if let Some(ms) = refusal.retry_after_ms {
        data["retry_after_ms"] = json!(ms);
    }
    let body = json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code.unwrap_or(refusal_code), "message": refusal.message, "data": data },
    });
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if refusal.refusal == AccessRefusal::Unauthenticated
        && let Some(challenge) = guard
            .admission
            .challenge()
            .and_then(|c| HeaderValue::from_str(c).ok())
    {
        headers.insert(header::WWW_AUTHENTICATE, challenge);
    }
    if let Some(ms) = refusal.retry_after_ms
        && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).to_string())
    {
        headers.insert(header::RETRY_AFTER, v);
    }
    if let Some(id) = seen
        .correlation_id
        .as_ref()
        .and_then(|c| HeaderValue::from_str(c.as_str()).ok())
    {
        headers.insert(X_CORRELATION_ID, id);
    }
    response
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Why a body is not a JSON-RPC message: not JSON (-32700) or not an object or batch (-32600).
fn check_json_rpc(body: &[u8]) -> Result<(), (i64, String)> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body) {
        return Err((-32700, format!("parse error: {e}")));
    }
    match body.trim_ascii_start().first() {
        Some(b'{' | b'[') => Ok(()),
        _ => Err((
            -32600,
            "invalid request: a JSON-RPC message is an object".to_owned(),
        )),
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets requests in progress
/// finish ([`crate::listener`]).
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: &HttpOptions,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let connections = crate::listener::Connections {
        app,
        tls: options.tls.clone(),
        header_timeout: options.header_timeout,
        admission: options.admission.clone(),
        shared,
        transport: Transport::Http,
    };
    crate::listener::serve(listener, connections, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::host_allowed;

    #[test]
    fn hosts_match_with_or_without_a_port_and_nothing_else() {
        let allowed: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "gate.example"]
            .map(str::to_owned)
            .to_vec();
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]:8080",
            "[::1]",
            "GATE.example:443",
        ] {
            assert!(host_allowed(host, &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:80",
            "localhost.evil.example",
            "[::2]:80",
            "",
        ] {
            assert!(!host_allowed(host, &allowed), "{host}");
        }
    }
}
