//! Open-source authentication: local-only, static bearer tokens and mTLS. Each mode turns what
//! the transport established (peer address, `Authorization` header, verified client
//! certificate) into a [`Principal`] with its scope, or refuses.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use decision_gate_core::hashing::HashDigest;
use decision_gate_core::{Action, HashAlgorithm, Principal};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{AuthConfig, AuthMode, ScopeConfig};

/// Longest `Authorization` header read.
const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// The verified client certificate of a TLS connection, as the TLS layer saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's common name, from a certificate rustls verified against the client CA.
    pub common_name: String,
}

/// Why a request was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFailure {
    /// What was wrong, in words (never the credential).
    pub detail: &'static str,
    /// The digest of the presented credential, for correlating attempts.
    pub presented: Option<HashDigest>,
}

impl AuthFailure {
    fn new(detail: &'static str) -> Self {
        Self {
            detail,
            presented: None,
        }
    }
}

/// What a request presented.
#[derive(Clone, Copy, Debug, Default)]
pub struct Presented<'a> {
    /// The peer address.
    pub peer: Option<SocketAddr>,
    /// The `Authorization` header's raw bytes.
    pub authorization: Option<&'a [u8]>,
    /// The connection's verified client certificate.
    pub certificate: Option<&'a ClientCertificate>,
}

/// Authenticates requests under one mode.
#[derive(Clone, Debug)]
pub struct Authenticator {
    mode: AuthMode,
    tokens: Vec<([u8; 32], Principal)>,
    clients: Vec<Principal>,
}

fn principal(subject: &str, scope: &ScopeConfig) -> Principal {
    Principal {
        subject: subject.to_owned(),
        tenant_id: scope.tenant_id,
        namespace_id: scope.namespace_id,
        actions: scope.tools.as_ref().map(|tools| {
            tools
                .iter()
                .filter_map(|t| Action::from_name(t))
                .collect::<BTreeSet<_>>()
        }),
    }
}

impl Authenticator {
    /// The authenticator a (validated) configuration describes.
    #[must_use]
    pub fn new(config: &AuthConfig) -> Self {
        let tokens = config
            .tokens
            .iter()
            .filter_map(|t| {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(&t.token_sha256, &mut digest).ok()?;
                Some((digest, principal(&t.subject, &t.scope)))
            })
            .collect();
        let clients = config
            .clients
            .iter()
            .map(|c| principal(&c.subject, &c.scope))
            .collect();
        Self {
            mode: config.mode,
            tokens,
            clients,
        }
    }

    /// The mode.
    #[must_use]
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The `WWW-Authenticate` challenge for refused requests, in bearer mode.
    #[must_use]
    pub fn challenge(&self) -> Option<&'static str> {
        (self.mode == AuthMode::Bearer).then_some(r#"Bearer realm="decision-gate""#)
    }

    /// Authenticates one HTTP request.
    ///
    /// # Errors
    /// [`AuthFailure`] naming what was missing or wrong.
    pub fn authenticate(&self, presented: Presented<'_>) -> Result<Principal, AuthFailure> {
        match self.mode {
            AuthMode::LocalOnly => match presented.peer {
                Some(peer) if peer.ip().is_loopback() => Ok(Principal {
                    subject: "loopback".to_owned(),
                    ..Principal::local()
                }),
                _ => Err(AuthFailure::new(
                    "local-only mode accepts loopback clients only",
                )),
            },
            AuthMode::Bearer => self.bearer(presented.authorization),
            AuthMode::Mtls => {
                let certificate = presented.certificate.ok_or(AuthFailure::new(
                    "no verified client certificate on the connection",
                ))?;
                self.clients
                    .iter()
                    .find(|p| p.subject == certificate.common_name)
                    .cloned()
                    .ok_or(AuthFailure::new(
                        "the client certificate's subject is not configured",
                    ))
            }
        }
    }

    fn bearer(&self, header: Option<&[u8]>) -> Result<Principal, AuthFailure> {
        let header = header.ok_or(AuthFailure::new("no Authorization header"))?;
        if header.len() > MAX_AUTHORIZATION_BYTES {
            return Err(AuthFailure::new("the Authorization header exceeds 8 KiB"));
        }
        let (scheme, token) = header
            .iter()
            .position(|&b| b == b' ')
            .map(|i| (&header[..i], header[i + 1..].trim_ascii()))
            .ok_or(AuthFailure::new(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
            return Err(AuthFailure::new(
                "the Authorization header is not `Bearer <token>`",
            ));
        }
        let presented: [u8; 32] = Sha256::digest(token).into();
        // Compare against every configured digest without stopping early, each comparison in
        // constant time, so timing reveals nothing about how close a wrong token came.
        let mut found = None;
        for (digest, principal) in &self.tokens {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(principal);
            }
        }
        found.cloned().ok_or_else(|| AuthFailure {
            detail: "the bearer token is not recognised",
            presented: Some(HashAlgorithm::Sha256.digest(token)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ClientConfig, TokenConfig};

    fn sha256_hex(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }

    fn bearer() -> Authenticator {
        Authenticator::new(&AuthConfig {
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

    fn with_header(header: &str) -> Presented<'_> {
        Presented {
            authorization: Some(header.as_bytes()),
            ..Presented::default()
        }
    }

    #[test]
    fn a_configured_token_yields_its_principal_and_scope() {
        let p = bearer()
            .authenticate(with_header("bearer s3cret-token"))
            .unwrap();
        assert_eq!(p.subject, "ci");
        assert_eq!(p.tenant_id.map(|t| t.get()), Some(7));
        assert_eq!(
            p.actions.unwrap().into_iter().collect::<Vec<_>>(),
            [Action::ScenarioNext]
        );
    }

    #[test]
    fn wrong_missing_and_malformed_tokens_are_refused() {
        let auth = bearer();
        let wrong = auth
            .authenticate(with_header("Bearer s3cret-tokem"))
            .unwrap_err();
        assert_eq!(wrong.detail, "the bearer token is not recognised");
        assert_eq!(
            wrong.presented,
            Some(HashAlgorithm::Sha256.digest(b"s3cret-tokem"))
        );
        for header in ["Basic s3cret-token", "Bearer", "Bearer ", "s3cret-token"] {
            assert!(auth.authenticate(with_header(header)).is_err(), "{header}");
        }
        assert!(auth.authenticate(Presented::default()).is_err());
        let huge = format!("Bearer {}", "x".repeat(9000));
        assert_eq!(
            auth.authenticate(with_header(&huge)).unwrap_err().detail,
            "the Authorization header exceeds 8 KiB"
        );
    }

    #[test]
    fn local_only_accepts_loopback_peers_only() {
        let auth = Authenticator::new(&AuthConfig::default());
        let at = |addr: &str| Presented {
            peer: Some(addr.parse().unwrap()),
            ..Presented::default()
        };
        assert_eq!(
            auth.authenticate(at("127.0.0.1:5000")).unwrap().subject,
            "loopback"
        );
        assert!(auth.authenticate(at("[::1]:5000")).is_ok());
        assert!(auth.authenticate(at("10.0.0.8:5000")).is_err());
        assert!(auth.authenticate(Presented::default()).is_err());
    }

    #[test]
    fn mtls_takes_the_subject_from_the_verified_certificate_only() {
        let auth = Authenticator::new(&AuthConfig {
            mode: AuthMode::Mtls,
            tokens: Vec::new(),
            clients: vec![ClientConfig {
                subject: "agent-1".into(),
                scope: ScopeConfig::default(),
            }],
        });
        let cert = ClientCertificate {
            common_name: "agent-1".into(),
        };
        let ok = auth
            .authenticate(Presented {
                certificate: Some(&cert),
                ..Presented::default()
            })
            .unwrap();
        assert_eq!(ok.subject, "agent-1");
        let other = ClientCertificate {
            common_name: "agent-2".into(),
        };
        assert!(
            auth.authenticate(Presented {
                certificate: Some(&other),
                ..Presented::default()
            })
            .is_err()
        );
        assert!(auth.authenticate(Presented::default()).is_err());
    }
}
