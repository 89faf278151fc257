//! Admission of network requests, the same on every network transport (MCP over HTTP, gRPC):
//! correlation id, then the source's authentication-failure budget, then authentication, the
//! per-principal rate limit and the per-principal concurrency cap ([`Admission::authenticate`]),
//! then the body, read under its size limit and its read timeout ([`Admission::read_body`]),
//! and only then a slot of the server's shared in-flight budget ([`Admission::admit`]): a caller
//! that is not authenticated, or that stalls its body, never holds what other callers need.
//! One [`Admission`] is shared by all listeners of a server, so a principal's rate and the
//! server's capacity are one budget whatever the transport. Each transport renders a
//! [`Refusal`] in its own terms (HTTP status and JSON-RPC code, gRPC status) and audits it
//! through [`crate::handler::Shared::refused`].

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use decision_gate_core::Principal;
use decision_gate_core::access::{AccessEvent, AccessRefusal, KeyedDigest};
use decision_gate_core::identity::{Authenticate, AuthnError, Credentials};
use decision_gate_core::ids::CorrelationId;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::caller::Transport;
use crate::config::LimitsConfig;
use crate::noise::SourceGate;
use crate::slots::{Slot, SlotRefusal, Slots};

/// Longest client correlation id.
const MAX_CORRELATION_ID: usize = 128;

/// The checks every network request passes before it reaches a tool.
pub struct Admission {
    auth: Arc<dyn Authenticate>,
    inflight: Arc<Semaphore>,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Each principal's requests between authentication and answer.
    per_principal: Arc<Slots>,
    body_timeout: Duration,
    sources: SourceGate,
    digests: crate::noise::DigestKey,
    /// Open connections, per source address and in all, every listener together.
    connections: Arc<Slots>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("challenge", &self.auth.challenge())
            .field("available", &self.inflight.available_permits())
            .field("rate_limited", &self.limiter.is_some())
            .finish()
    }
}

/// Why a request was refused, with what the audit record needs.
#[derive(Clone, Debug)]
pub struct Refusal {
    /// Which check refused it.
    pub refusal: AccessRefusal,
    /// What was wrong, in words (never a credential).
    pub message: String,
    /// How long to wait, for rate limits.
    pub retry_after_ms: Option<u64>,
    /// The authenticated subject, when the refusal came after authentication.
    pub principal: Option<String>,
    /// The digest of a presented credential or malformed value.
    pub presented: Option<KeyedDigest>,
    /// Whether this refusal gets its own audit event; `false` for the refusals of a source
    /// over its authentication-failure budget, which are counted into one event per window.
    pub audited: bool,
}

impl Refusal {
    /// A refusal with nothing but its reason.
    #[must_use]
    pub fn new(refusal: AccessRefusal, message: impl Into<String>) -> Self {
        Self {
            refusal,
            message: message.into(),
            retry_after_ms: None,
            principal: None,
            presented: None,
            audited: true,
        }
    }

    /// Whether the same request may succeed later.
    #[must_use]
    pub fn retryable(&self) -> bool {
        self.refusal.kind().is_retryable()
    }

    /// The audit record of this refusal.
    #[must_use]
    pub fn event(&self, transport: Transport, seen: &Seen) -> AccessEvent {
        AccessEvent {
            refusal: self.refusal,
            transport: transport.name().to_owned(),
            principal: self.principal.clone(),
            peer: seen.peer.map(|p| p.ip().to_string()),
            tool: seen.tool.clone(),
            request_id: seen.request_id.clone(),
            correlation_id: seen.correlation_id.clone(),
            presented_hash: self.presented.clone(),
            detail: self.message.clone(),
        }
    }
}

/// What is known of a request when it is refused.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The peer address.
    pub peer: Option<SocketAddr>,
    /// The server-issued request id.
    pub request_id: Option<String>,
    /// The validated correlation id.
    pub correlation_id: Option<CorrelationId>,
    /// The operation, where the transport names it before the body is read (gRPC).
    pub tool: Option<String>,
}

impl Seen {
    /// What an HTTP request (MCP or gRPC) shows before any check: its peer and the request id
    /// the server issued.
    #[must_use]
    pub fn of(req: &axum::extract::Request) -> Self {
        Self {
            peer: req
                .extensions()
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
            request_id: req
                .headers()
                .get(crate::http::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            ..Self::default()
        }
    }
}

/// An authenticated request whose body has not been read: who, holding one of the principal's
/// concurrency slots.
#[derive(Debug)]
pub struct Authenticated {
    /// The authenticated principal.
    pub principal: Principal,
    slot: Slot,
}

/// An admitted request: who, and the slots to hold until the answer is out.
#[derive(Debug)]
pub struct Admitted {
    /// The authenticated principal.
    pub principal: Principal,
    /// The server's in-flight budget and the principal's slot; released when dropped.
    pub permit: Permit,
}

/// What an admitted request holds until its answer is out.
#[derive(Debug)]
pub struct Permit {
    _inflight: OwnedSemaphorePermit,
    _slot: Slot,
}

impl Admission {
    /// The checks a (validated) configuration describes; `digests` keys the digests of
    /// presented credentials in audit events.
    #[must_use]
    pub fn new(
        auth: Arc<dyn Authenticate>,
        limits: &LimitsConfig,
        digests: crate::noise::DigestKey,
    ) -> Self {
        let limiter = limits.rate_limit.as_ref().map(|r| {
            let per_second = NonZeroU32::new(r.requests_per_second).unwrap_or(NonZeroU32::MIN);
            let burst = NonZeroU32::new(r.burst).unwrap_or(NonZeroU32::MIN);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        Self {
            auth,
            inflight: Arc::new(Semaphore::new(limits.max_inflight)),
            limiter,
            per_principal: Slots::new(limits.max_inflight_per_principal, usize::MAX),
            body_timeout: Duration::from_millis(limits.body_timeout_ms),
            sources: SourceGate::new(&limits.auth_failures),
            digests,
            connections: Slots::new(limits.max_connections_per_source, limits.max_connections),
        }
    }

    /// A slot for a new connection from `peer`, held while it is open; `None` when the source
    /// (IPv6 by /64) or the server has as many open as allowed: the connection is closed
    /// unread and counted into its source's event of the window ([`SourceGate`]), so a flood
    /// of connections never becomes a flood of trail lines.
    #[must_use]
    pub fn connection(&self, peer: SocketAddr) -> Option<Slot> {
        let key = crate::noise::source(Some(peer)).map_or_else(String::new, |ip| ip.to_string());
        self.connections.take(&key).ok()
    }

    /// The gate that budgets authentication failures per source address, and counts the
    /// refusals kept out of the trail.
    #[must_use]
    pub fn sources(&self) -> &SourceGate {
        &self.sources
    }

    /// The keyed digest of a presented credential or rejected value, for an audit event.
    #[must_use]
    pub fn digest(&self, raw: &[u8]) -> KeyedDigest {
        self.digests.digest(raw)
    }

    /// The `WWW-Authenticate` challenge for refused requests, if the authentication has one.
    #[must_use]
    pub fn challenge(&self) -> Option<&str> {
        self.auth.challenge()
    }

    /// Validates a client correlation id, when one was sent; the first check, so that every
    /// later refusal is audited with it.
    ///
    /// # Errors
    /// [`AccessRefusal::InvalidCorrelationId`] naming what is wrong with it.
    pub fn correlation_id(
        &self,
        raw: Option<&[u8]>,
        name: &str,
    ) -> Result<Option<CorrelationId>, Refusal> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        check_correlation_id(raw)
            .map(Some)
            .map_err(|reason| Refusal {
                presented: Some(self.digest(raw)),
                ..Refusal::new(
                    AccessRefusal::InvalidCorrelationId,
                    format!("{name} {reason}"),
                )
            })
    }

    /// Validates a client idempotency key (the `idempotency-key` header or gRPC metadata),
    /// when one was sent: the same rules as a correlation id.
    ///
    /// # Errors
    /// [`AccessRefusal::InvalidRequest`] naming what is wrong with it.
    pub fn idempotency_key(&self, raw: Option<&[u8]>) -> Result<Option<String>, Refusal> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        check_idempotency_key(raw)
            .map(Some)
            .map_err(|reason| Refusal {
                presented: Some(self.digest(raw)),
                ..Refusal::new(
                    AccessRefusal::InvalidRequest,
                    format!("{IDEMPOTENCY_KEY} {reason}"),
                )
            })
    }

    /// The source's failure budget, authentication, the rate limit and the principal's
    /// concurrency cap, in that order.
    ///
    /// # Errors
    /// The first check that refuses the request.
    pub async fn authenticate(
        &self,
        credentials: &Credentials<'_>,
    ) -> Result<Authenticated, Refusal> {
        if let Some(refusal) = self.sources.held_back(credentials.peer) {
            return Err(refusal);
        }
        let principal = match self.auth.authenticate(credentials).await {
            Ok(principal) => principal,
            Err(AuthnError::Refused { detail, presented }) => {
                return Err(Refusal {
                    // The authenticator's digest is plain; the trail gets it keyed.
                    presented: presented.map(|d| self.digest(d.value.as_bytes())),
                    audited: self.sources.failed(credentials.peer, credentials.transport),
                    ..Refusal::new(AccessRefusal::Unauthenticated, detail)
                });
            }
            Err(AuthnError::Unavailable(reason)) => {
                return Err(Refusal::new(
                    AccessRefusal::Unavailable,
                    format!("authentication is unavailable: {reason}"),
                ));
            }
        };
        let key = principal.budget_key();
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check_key(&key)
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            return Err(Refusal {
                retry_after_ms: Some(ms),
                principal: Some(principal.subject),
                ..Refusal::new(AccessRefusal::RateLimited, "rate limit exceeded")
            });
        }
        match self.per_principal.take(&key) {
            Ok(slot) => Ok(Authenticated { principal, slot }),
            Err(SlotRefusal::Key(limit) | SlotRefusal::Total(limit)) => Err(Refusal {
                retry_after_ms: Some(1000),
                principal: Some(principal.subject),
                ..Refusal::new(
                    AccessRefusal::RateLimited,
                    format!(
                        "this principal already has {limit} requests in flight \
                         (server.limits.max_inflight_per_principal)"
                    ),
                )
            }),
        }
    }

    /// Reads an authenticated request's body: at most `max_bytes`, within the body timeout.
    ///
    /// # Errors
    /// [`AccessRefusal::TooLarge`] with `too_large` as its message, or
    /// [`AccessRefusal::BodyTimeout`] when the body did not arrive in time.
    pub async fn read_body(
        &self,
        who: &Authenticated,
        body: axum::body::Body,
        max_bytes: usize,
        too_large: impl FnOnce() -> String,
    ) -> Result<axum::body::Bytes, Refusal> {
        let refusal = |kind, message| Refusal {
            principal: Some(who.principal.subject.clone()),
            ..Refusal::new(kind, message)
        };
        match tokio::time::timeout(self.body_timeout, axum::body::to_bytes(body, max_bytes)).await {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(_)) => Err(refusal(AccessRefusal::TooLarge, too_large())),
            Err(_) => Err(refusal(
                AccessRefusal::BodyTimeout,
                format!(
                    "the request body did not arrive within {} ms (server.limits.body_timeout_ms)",
                    self.body_timeout.as_millis()
                ),
            )),
        }
    }

    /// Takes a slot of the server's in-flight budget for a request that is authenticated and
    /// whose body has arrived.
    ///
    /// # Errors
    /// [`AccessRefusal::Overloaded`] when the budget is spent.
    pub fn admit(&self, who: Authenticated) -> Result<Admitted, Refusal> {
        match self.inflight.clone().try_acquire_owned() {
            Ok(inflight) => Ok(Admitted {
                principal: who.principal,
                permit: Permit {
                    _inflight: inflight,
                    _slot: who.slot,
                },
            }),
            Err(_) => Err(Refusal {
                principal: Some(who.principal.subject),
                ..Refusal::new(AccessRefusal::Overloaded, "too many requests in flight")
            }),
        }
    }
}

/// The header (and gRPC metadata key) a client names its idempotency key with.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A client idempotency key: trimmed, 1..=128 RFC 7230 token characters, like a correlation id.
///
/// # Errors
/// What is wrong with it, in words.
pub fn check_idempotency_key(raw: &[u8]) -> Result<String, &'static str> {
    check_correlation_id(raw).map(|id| id.as_str().to_owned())
}

/// A client correlation id: trimmed, 1..=128 RFC 7230 token characters.
fn check_correlation_id(raw: &[u8]) -> Result<CorrelationId, &'static str> {
    let value = raw.trim_ascii();
    if value.is_empty() {
        return Err("is empty");
    }
    if value.len() > MAX_CORRELATION_ID {
        return Err("is longer than 128 characters");
    }
    if let Some(&b) = value.iter().find(|&&b| !is_token_char(b)) {
        return Err(if b.is_ascii_whitespace() {
            "contains whitespace"
        } else if b.is_ascii_control() {
            "contains a control character"
        } else if !b.is_ascii() {
            "is not ASCII"
        } else {
            "contains a character outside the RFC 7230 token set"
        });
    }
    let text = std::str::from_utf8(value).map_err(|_| "is not ASCII")?;
    CorrelationId::new(text).map_err(|_| "is not a valid identifier")
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_trimmed_tokens_of_at_most_128_characters() {
        assert_eq!(
            check_correlation_id(b"  run-42.attempt_1  ")
                .unwrap()
                .as_str(),
            "run-42.attempt_1"
        );
        assert_eq!(check_correlation_id(b"   ").unwrap_err(), "is empty");
        assert_eq!(
            check_correlation_id("a".repeat(129).as_bytes()).unwrap_err(),
            "is longer than 128 characters"
        );
        assert!(check_correlation_id("a".repeat(128).as_bytes()).is_ok());
        assert_eq!(
            check_correlation_id(b"a b").unwrap_err(),
            "contains whitespace"
        );
        assert_eq!(
            check_correlation_id(b"a\x01b").unwrap_err(),
            "contains a control character"
        );
        assert_eq!(
            check_correlation_id("caf\u{e9}".as_bytes()).unwrap_err(),
            "is not ASCII"
        );
        assert_eq!(
            check_correlation_id(b"a/b").unwrap_err(),
            "contains a character outside the RFC 7230 token set"
        );
    }
}
