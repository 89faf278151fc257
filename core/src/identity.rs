//! Who is calling: the [`Principal`] a request authenticates as, and the [`Authenticate`] seam
//! that turns what a transport verified (peer address, headers or gRPC metadata, the TLS
//! client certificate) into one.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::access::Action;
use crate::hashing::HashDigest;
use crate::ids::{NamespaceId, TenantId};

/// How a principal proved who it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// The embedding process itself, stdio or a loopback peer in local-only mode.
    #[default]
    Local,
    /// A bearer token configured in the server's file.
    StaticBearer,
    /// A TLS client certificate verified by the server's TLS stack.
    Mtls,
    /// An OpenID Connect access token verified against its issuer's keys.
    Oidc,
    /// An API key issued by the server.
    ApiKey,
}

impl AuthMethod {
    /// The snake_case name, as audit events carry it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::StaticBearer => "static_bearer",
            Self::Mtls => "mtls",
            Self::Oidc => "oidc",
            Self::ApiKey => "api_key",
        }
    }
}

/// An authenticated caller and the scope it was granted.
///
/// Authentication fills it in; the [`crate::access::Authorizer`] interprets it. The open-source
/// authorizer reads the tenant and namespace scope and the allowed actions; an enterprise
/// authorizer reads the roles as well.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Who: `local`, a token's name, a certificate subject, a token's `sub`.
    pub subject: String,
    /// Who vouched for the subject: an OIDC issuer, `static`, `mtls`; none for local callers.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The credential presented (an API key id, a token's digest), never a secret.
    #[serde(default)]
    pub credential_id: Option<String>,
    /// How the subject proved who it is.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// The only organisation whose tenants it may touch (the organisation of its API key or
    /// identity provider), or any when `None`.
    #[serde(default)]
    pub organisation_id: Option<i64>,
    /// The only tenant it may touch, or any when `None`.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// The only namespace it may touch, or any when `None`.
    #[serde(default)]
    pub namespace_id: Option<NamespaceId>,
    /// The actions it may perform, or all when `None`.
    #[serde(default)]
    pub actions: Option<BTreeSet<Action>>,
    /// Roles granted to it, interpreted by the authorizer (empty for open-source principals).
    #[serde(default)]
    pub roles: BTreeSet<String>,
    /// The authentication context class it proved (OIDC `acr`, e.g. an MFA level), if any.
    #[serde(default)]
    pub mfa_level: Option<String>,
    /// When it authenticated, in unix seconds (OIDC `auth_time`), if known.
    #[serde(default)]
    pub auth_time: Option<u64>,
}

impl Principal {
    /// The unrestricted local caller (stdio, loopback).
    #[must_use]
    pub fn local() -> Self {
        Self {
            subject: "local".to_owned(),
            ..Self::default()
        }
    }

    /// Who this is for per-principal budgets (rates, concurrency): the subject at its issuer,
    /// since the same subject name at another issuer is someone else.
    #[must_use]
    pub fn budget_key(&self) -> String {
        format!(
            "{}\u{0}{}",
            self.issuer.as_deref().unwrap_or(""),
            self.subject
        )
    }
}

/// A TLS client certificate that the server's TLS stack verified against its client CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCertificate {
    /// The subject's common name.
    pub common_name: String,
}

/// What a network request presented, as the transport verified it. HTTP headers and gRPC
/// metadata arrive as the same header map (gRPC runs over HTTP/2).
#[derive(Clone, Copy, Debug)]
pub struct Credentials<'a> {
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// The peer's address.
    pub peer: Option<SocketAddr>,
    /// The request's headers (gRPC: its metadata).
    pub headers: &'a http::HeaderMap,
    /// The connection's verified client certificate.
    pub certificate: Option<&'a PeerCertificate>,
}

/// Why a request was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthnError {
    /// The credentials are missing, malformed, unknown, expired or revoked.
    #[error("{detail}")]
    Refused {
        /// What was wrong, in words (never the credential).
        detail: String,
        /// A digest of the presented credential, for correlating attempts; never the value.
        presented: Option<HashDigest>,
    },
    /// The decision could not be made (an identity provider or key store is unreachable);
    /// the request is refused, and may succeed later.
    #[error("authentication unavailable: {0}")]
    Unavailable(String),
}

impl AuthnError {
    /// A refusal with nothing but its reason.
    #[must_use]
    pub fn refused(detail: impl Into<String>) -> Self {
        Self::Refused {
            detail: detail.into(),
            presented: None,
        }
    }
}

/// Turns a request's credentials into a [`Principal`], or refuses.
///
/// # Contract
/// 1. The principal comes only from what the transport verified (the peer address, a header
///    value checked against a secret or a signature, a certificate the TLS stack verified);
///    never from a header that merely names a subject.
/// 2. Missing or wrong credentials are [`AuthnError::Refused`]; nothing about how close a wrong
///    secret came leaks through the answer.
/// 3. When the decision cannot be made, the answer is [`AuthnError::Unavailable`], never a
///    principal (fail closed).
///
/// # Errors
/// [`AuthnError`] as above.
///
/// # Cancellation
/// Dropping the future has no effect beyond an abandoned key fetch.
#[async_trait]
pub trait Authenticate: Send + Sync {
    /// Authenticates one request.
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError>;

    /// The `WWW-Authenticate` challenge to send with a refusal, if the scheme has one.
    fn challenge(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_key_is_the_subject_at_its_issuer() {
        let at = |issuer: Option<&str>, subject: &str| Principal {
            issuer: issuer.map(str::to_owned),
            subject: subject.to_owned(),
            ..Principal::default()
        };
        let alice_a = at(Some("https://a.example"), "alice");
        assert_eq!(
            alice_a.budget_key(),
            at(Some("https://a.example"), "alice").budget_key()
        );
        assert_ne!(
            alice_a.budget_key(),
            at(Some("https://b.example"), "alice").budget_key()
        );
        assert_ne!(alice_a.budget_key(), at(None, "alice").budget_key());
        // No subject can pose as an issuer-and-subject pair.
        assert_ne!(
            at(Some("x"), "y").budget_key(),
            at(None, "x\u{0}y").budget_key()
        );
    }
}
