//! TLS for the HTTP transport (rustls with the ring provider). With a client CA, every client
//! must present a certificate that rustls verifies against it; the principal's subject is the
//! verified certificate's common name, never a header.

use std::net::SocketAddr;
use std::sync::Arc;

use decision_gate_core::access::{AccessEvent, AccessRefusal};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::caller::Transport;
use crate::config::TlsConfig;

/// A loaded TLS configuration.
#[derive(Clone)]
pub struct TlsSettings {
    pub(crate) acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Loads the certificate, key and (for mTLS) client CA.
    ///
    /// # Errors
    /// A message naming the file or setting that is wrong.
    pub fn load(config: &TlsConfig) -> Result<Self, String> {
        let certs = CertificateDer::pem_file_iter(&config.cert_path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| format!("server.tls.cert_path {}: {e}", config.cert_path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "server.tls.cert_path {}: no certificate in the file",
                config.cert_path.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&config.key_path)
            .map_err(|e| format!("server.tls.key_path {}: {e}", config.key_path.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match &config.client_ca_path {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("server.tls.client_ca_path {}: {e}", ca.display()))?
                {
                    let cert = cert
                        .map_err(|e| format!("server.tls.client_ca_path {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("server.tls.client_ca_path {}: {e}", ca.display()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| format!("server.tls.client_ca_path {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut server = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("server.tls: the certificate and key do not match: {e}"))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
        })
    }
}

/// The common name of a DER certificate's subject.
pub(crate) fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(name)
}

/// The audit event of a refused TLS handshake.
pub(crate) fn handshake_refused(
    transport: Transport,
    peer: SocketAddr,
    reason: &str,
) -> AccessEvent {
    AccessEvent {
        refusal: AccessRefusal::Unauthenticated,
        transport: transport.name().to_owned(),
        principal: None,
        peer: Some(peer.ip().to_string()),
        tool: None,
        request_id: None,
        correlation_id: None,
        presented_hash: None,
        detail: format!("TLS handshake refused: {reason}"),
    }
}
