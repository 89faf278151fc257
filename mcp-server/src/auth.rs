//! Open-source authentication: local-only, static bearer tokens and mTLS, each an
//! implementation of the core [`Authenticate`] seam. Each turns what the transport established
//! (peer address, `Authorization` header, verified client certificate) into a [`Principal`]
//! with its scope, or refuses. [`from_config`] picks the one `server.auth` describes; the
//! open-source binary composes it, and other composition roots pass their own.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use decision_gate_core::identity::{AuthMethod, Authenticate, AuthnError, Credentials};
use decision_gate_core::{Action, HashAlgorithm, Principal};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{AuthConfig, AuthMode, ScopeConfig};

/// Longest `Authorization` header read.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

fn principal(subject: &str, scope: &ScopeConfig, method: AuthMethod) -> Principal {
    Principal {
        subject: subject.to_owned(),
        issuer: Some(method.name().to_owned()),
        auth_method: method,
        tenant_id: scope.tenant_id,
        namespace_id: scope.namespace_id,
        actions: scope.tools.as_ref().map(|tools| {
            tools
                .iter()
                .filter_map(|t| Action::from_name(t))
                .collect::<BTreeSet<_>>()
        }),
        ..Principal::default()
    }
}

/// The authentication a (validated) configuration describes.
#[must_use]
pub fn from_config(config: &AuthConfig) -> Arc<dyn Authenticate> {
    match config.mode {
        AuthMode::LocalOnly => Arc::new(LocalOnly),
        AuthMode::Bearer => Arc::new(StaticBearer::new(config)),
        AuthMode::Mtls => Arc::new(MtlsSubjects::new(config)),
    }
}

/// Local-only: loopback peers, as the unrestricted `loopback` principal.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

#[async_trait]
impl Authenticate for LocalOnly {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        match credentials.peer {
            Some(peer) if peer.ip().is_loopback() => Ok(Principal {
                subject: "loopback".to_owned(),
                ..Principal::local()
            }),
            _ => Err(AuthnError::refused(
                "local-only mode accepts loopback clients only",
            )),
        }
    }
}

/// Static bearer tokens: the SHA-256 digests of the configured tokens, each with its scope.
#[derive(Clone, Debug)]
pub struct StaticBearer {
    tokens: Vec<([u8; 32], Principal)>,
}

impl StaticBearer {
    /// The tokens of `config` (digests that do not decode were refused by the config check).
    #[must_use]
    pub fn new(config: &AuthConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&t.token_sha256, &mut digest).ok()?;
                let mut p = principal(&t.subject, &t.scope, AuthMethod::StaticBearer);
                // The configured digest's prefix names the token; it reveals nothing of it.
                p.credential_id = Some(format!("sha256:{}", &t.token_sha256[..16]));
                Some((digest, p))
            })
            .collect();
        Self { tokens }
    }
}

#[async_trait]
impl Authenticate for StaticBearer {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        let token = bearer_token(credentials)?;
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Compare against every configured digest without stopping early, each comparison in
        // constant time, so timing reveals nothing about how close a wrong token came.
        let mut found = None;
        for (digest, principal) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or_else(|| AuthnError::Refused {
            detail: "the bearer token is not recognised".to_owned(),
            presented: Some(HashAlgorithm::Sha256.digest(token)),
        })
    }

    fn challenge(&self) -> Option<&str> {
        Some(r#"Bearer realm="decision-gate""#)
    }
}

/// The token of an `Authorization: Bearer <token>` header, within the size limit.
///
/// # Errors
/// [`AuthnError::Refused`] naming what is missing or malformed.
pub fn bearer_token<'a>(credentials: &Credentials<'a>) -> Result<&'a [u8], AuthnError> {
    let header = credentials
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| AuthnError::refused("no Authorization header"))?
        .as_bytes();
    if header.len() > MAX_AUTHORIZATION_BYTES {
        return Err(AuthnError::refused(
            "the Authorization header exceeds 8 KiB",
        ));
    }
    let malformed = || AuthnError::refused("the Authorization header is not `Bearer <token>`");
    let (scheme, token) = header
        .iter()
        .position(|&b| b == b' ')
        .map(|i| (&header[..i], header[i + 1..].trim_ascii()))
        .ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(malformed());
    }
    Ok(token)
}

/// mTLS: the common name of a certificate the TLS stack verified, matched to configured
/// subjects.
#[derive(Clone, Debug)]
pub struct MtlsSubjects {
    clients: Vec<Principal>,
}

impl MtlsSubjects {
    /// The clients of `config`.
    #[must_use]
    pub fn new(config: &AuthConfig) -> Self {
        let clients = config
            .clients
            .iter()
            .map(|c| {
                let mut p = principal(&c.subject, &c.scope, AuthMethod::Mtls);
                p.credential_id = Some(format!("cn:{}", c.subject));
                p
            })
            .collect();
        Self { clients }
    }
}

#[async_trait]
impl Authenticate for MtlsSubjects {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        let certificate = credentials.certificate.ok_or_else(|| {
            AuthnError::refused("no verified client certificate on the connection")
        })?;
        self.clients
            .iter()
            .find(|p| p.subject == certificate.common_name)
            .cloned()
            .ok_or_else(|| {
                AuthnError::refused("the client certificate's subject is not configured")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, TokenConfig};
    use decision_gate_core::identity::PeerCertificate;

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn bearer() -> StaticBearer {
        StaticBearer::new(&AuthConfig {
            mode: AuthMode::Bearer,
            tokens: vec![TokenConfig {
                subject: "ci".into(),
                token_sha256: sha256_hex("s3cret-token"),
                scope: ScopeConfig {
                    tenant_id: Some(decision_gate_core::TenantId::new(7).unwrap()),
                    namespace_id: None,
                    tools: Some(vec!["scenario_next".into()]),
                },
            }],
            clients: Vec::new(),
        })
    }

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        if let Some(value) = authorization {
            map.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        }
        map
    }

    fn presented<'a>(headers: &'a http::HeaderMap) -> Credentials<'a> {
        Credentials {
            transport: "http",
            peer: None,
            headers,
            certificate: None,
        }
    }

    async fn with_header(auth: &dyn Authenticate, header: &str) -> Result<Principal, AuthnError> {
        let map = headers(Some(header));
        auth.authenticate(&presented(&map)).await
    }

    fn detail(error: AuthnError) -> String {
        match error {
            AuthnError::Refused { detail, .. } => detail,
            AuthnError::Unavailable(m) => panic!("unavailable: {m}"),
        }
    }

    #[tokio::test]
    async fn a_configured_token_yields_its_principal_and_scope() {
        let p = with_header(&bearer(), "bearer s3cret-token").await.unwrap();
        assert_eq!(p.subject, "ci");
        assert_eq!(p.auth_method, AuthMethod::StaticBearer);
        assert_eq!(p.issuer.as_deref(), Some("static_bearer"));
        assert_eq!(
            p.credential_id.as_deref(),
            Some(&*format!("sha256:{}", &sha256_hex("s3cret-token")[..16]))
        );
        assert_eq!(p.tenant_id.map(|t| t.get()), Some(7));
        assert_eq!(
            p.actions.unwrap().into_iter().collect::<Vec<_>>(),
            [Action::ScenarioNext]
        );
    }

    #[tokio::test]
    async fn wrong_missing_and_malformed_tokens_are_refused() {
        let auth = bearer();
        let wrong = with_header(&auth, "Bearer s3cret-tokem").await.unwrap_err();
        assert_eq!(
            wrong,
            AuthnError::Refused {
                detail: "the bearer token is not recognised".into(),
                presented: Some(HashAlgorithm::Sha256.digest(b"s3cret-tokem")),
            }
        );
        for header in ["Basic s3cret-token", "Bearer", "Bearer ", "s3cret-token"] {
            assert!(with_header(&auth, header).await.is_err(), "{header}");
        }
        let none = headers(None);
        assert_eq!(
            detail(auth.authenticate(&presented(&none)).await.unwrap_err()),
            "no Authorization header"
        );
        let huge = format!("Bearer {}", "x".repeat(9000));
        assert_eq!(
            detail(with_header(&auth, &huge).await.unwrap_err()),
            "the Authorization header exceeds 8 KiB"
        );
        assert_eq!(auth.challenge(), Some(r#"Bearer realm="decision-gate""#));
    }

    #[tokio::test]
    async fn local_only_accepts_loopback_peers_only() {
        let map = headers(None);
        let at = |addr: Option<&str>| Credentials {
            peer: addr.map(|a| a.parse().unwrap()),
            ..presented(&map)
        };
        assert_eq!(
            LocalOnly
                .authenticate(&at(Some("127.0.0.1:5000")))
                .await
                .unwrap()
                .subject,
            "loopback"
        );
        assert!(
            LocalOnly
                .authenticate(&at(Some("[::1]:5000")))
                .await
                .is_ok()
        );
        assert!(
            LocalOnly
                .authenticate(&at(Some("10.0.0.8:5000")))
                .await
                .is_err()
        );
        assert!(LocalOnly.authenticate(&at(None)).await.is_err());
        assert_eq!(LocalOnly.challenge(), None);
    }

    #[tokio::test]
    async fn mtls_takes_the_subject_from_the_verified_certificate_only() {
        let auth = MtlsSubjects::new(&AuthConfig {
            mode: AuthMode::Mtls,
            tokens: Vec::new(),
            clients: vec![ClientConfig {
                subject: "agent-1".into(),
                scope: ScopeConfig::default(),
            }],
        });
        let map = headers(None);
        let with_cert = |cert: Option<&'static PeerCertificate>| Credentials {
            certificate: cert,
            ..presented(&map)
        };
        static AGENT_1: std::sync::LazyLock<PeerCertificate> =
            std::sync::LazyLock::new(|| PeerCertificate {
                common_name: "agent-1".into(),
            });
        static AGENT_2: std::sync::LazyLock<PeerCertificate> =
            std::sync::LazyLock::new(|| PeerCertificate {
                common_name: "agent-2".into(),
            });
        let ok = auth.authenticate(&with_cert(Some(&AGENT_1))).await.unwrap();
        assert_eq!(ok.subject, "agent-1");
        assert_eq!(ok.auth_method, AuthMethod::Mtls);
        assert!(auth.authenticate(&with_cert(Some(&AGENT_2))).await.is_err());
        assert!(auth.authenticate(&with_cert(None)).await.is_err());
    }
}
