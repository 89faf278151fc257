//! [`EnterpriseAuthenticator`]: the enterprise server's one `Authenticate`. A bearer token that
//! starts with `dg_` is an API key; one shaped like a JWT, with issuers configured, is an OIDC
//! access token; anything else (the bearer tokens and mTLS clients of the configuration file)
//! goes to the open-source authentication the file describes. Each credential has one checker:
//! an API key that fails is never tried as something else.

use std::sync::Arc;

use async_trait::async_trait;
use decision_gate_core::Principal;
use decision_gate_core::identity::{Authenticate, AuthnError, Credentials};
use decision_gate_mcp::auth::bearer_token;
use decision_gate_mcp::config::{AuthConfig, AuthMode};

use crate::api_keys::{ApiKeys, PREFIX};
use crate::oidc::{OidcVerifier, looks_like_jwt};

/// The configured credentials of a server with none (`server.auth.mode = "local_only"`): on the
/// enterprise server no caller is trusted for where it connects from.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoConfiguredCredentials;

#[async_trait]
impl Authenticate for NoConfiguredCredentials {
    async fn authenticate(&self, _credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        Err(AuthnError::refused(
            "no credentials: present an API key or an access token from a trusted issuer",
        ))
    }
}

/// The configured credentials of `auth`: its bearer tokens or client certificates, or none.
#[must_use]
pub fn configured(auth: &AuthConfig) -> Arc<dyn Authenticate> {
    match auth.mode {
        AuthMode::LocalOnly => Arc::new(NoConfiguredCredentials),
        AuthMode::Bearer | AuthMode::Mtls => decision_gate_mcp::auth::from_config(auth),
    }
}

/// API keys, OIDC tokens, then the configured credentials.
pub struct EnterpriseAuthenticator {
    api_keys: ApiKeys,
    oidc: Arc<OidcVerifier>,
    configured: Arc<dyn Authenticate>,
    challenge: String,
}

impl std::fmt::Debug for EnterpriseAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnterpriseAuthenticator")
            .field("api_keys", &self.api_keys)
            .field("oidc", &self.oidc)
            .finish_non_exhaustive()
    }
}

impl EnterpriseAuthenticator {
    /// The three checkers; refusals carry `challenge` (`WWW-Authenticate`).
    #[must_use]
    pub fn new(
        api_keys: ApiKeys,
        oidc: Arc<OidcVerifier>,
        configured: Arc<dyn Authenticate>,
        challenge: String,
    ) -> Self {
        Self {
            api_keys,
            oidc,
            configured,
            challenge,
        }
    }
}

impl EnterpriseAuthenticator {
    /// Forgets every key and token read (the database announced a change).
    pub fn forget(&self) {
        self.api_keys.forget();
        self.oidc.forget();
    }
}

#[async_trait]
impl Authenticate for EnterpriseAuthenticator {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Principal, AuthnError> {
        match bearer_token(credentials) {
            Ok(token) if token.starts_with(PREFIX.as_bytes()) => {
                self.api_keys.authenticate(token).await
            }
            Ok(token) if !self.oidc.is_empty() && looks_like_jwt(token) => {
                self.oidc.verify(token).await
            }
            _ => self.configured.authenticate(credentials).await,
        }
    }

    fn challenge(&self) -> Option<&str> {
        Some(&self.challenge)
    }
}
