//! The `http` provider: the status of a URL, or the digest of its body. HTTPS only unless
//! configured; redirects are refused, not followed; private, loopback, link-local and other
//! non-public addresses are refused unless allowed, both for IP literals and for every address a
//! hostname resolves to (checked again inside the connection's resolver, so a hostname cannot
//! rebind to a private address between the check and the connection).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Client, Url, redirect};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{answer, contract, refuse};
use crate::comparator::Comparator::*;
use crate::evidence::{EvidenceContext, EvidenceQuery, EvidenceRef, EvidenceResult};
use crate::hashing::HashAlgorithm;
use crate::provider::{EvidenceProvider, ProviderContract, ProviderError};

/// Configuration of the `http` provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether plain `http://` URLs are allowed.
    pub allow_http: bool,
    /// Whether private, loopback, link-local and other non-public addresses are allowed.
    pub allow_private_addresses: bool,
    /// When set, the only hosts that may be asked.
    pub allowed_hosts: Option<BTreeSet<String>>,
    /// The whole request's time limit.
    pub timeout_ms: u64,
    /// The largest response body read; a larger one is an error.
    pub max_response_bytes: usize,
    /// The digest algorithm of `body_hash`.
    pub hash_algorithm: HashAlgorithm,
    /// The `User-Agent` header.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            allow_private_addresses: false,
            allowed_hosts: None,
            timeout_ms: 5_000,
            max_response_bytes: 1024 * 1024,
            hash_algorithm: HashAlgorithm::Sha256,
            user_agent: concat!("decision-gate/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Whether an address is on the public internet: not private, loopback, link-local,
/// unspecified, multicast, broadcast, shared, documentation, benchmarking or reserved.
#[must_use]
pub fn is_public_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space, RFC 6598
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, RFC 2544
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, RFC 6890
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // Prefixes that carry an IPv4 address are judged by that address.
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(v4(seg[6], seg[7])); // NAT64, 64:ff9b::/96
    }
    if seg[0] == 0x2002 {
        return is_public_v4(v4(seg[1], seg[2])); // 6to4, 2002::/16
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || seg[..6] == [0; 6] // IPv4-compatible, ::/96 (deprecated)
        || (seg[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local, fec0::/10 (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8)) // documentation, 2001:db8::/32
}

/// Resolves through the system resolver and drops every address the policy refuses.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || is_public_address(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} resolves only to addresses that are not allowed").into(),
                );
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The `http` provider.
#[derive(Debug)]
pub struct HttpProvider {
    config: HttpConfig,
    client: Client,
    contract: ProviderContract,
}

/// An `http` provider could not be built.
#[derive(Debug, thiserror::Error)]
#[error("http provider: {0}")]
pub struct HttpConfigError(String);

impl HttpProvider {
    /// An `http` provider with `config`.
    ///
    /// # Errors
    /// [`HttpConfigError`] for a zero timeout or size limit, or when the HTTP client cannot be
    /// built.
    pub fn new(config: HttpConfig) -> Result<Self, HttpConfigError> {
        if config.timeout_ms == 0 || config.max_response_bytes == 0 {
            return Err(HttpConfigError(
                "timeout_ms and max_response_bytes must be at least 1".into(),
            ));
        }
        let client = Client::builder()
            .redirect(redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms))
            .user_agent(config.user_agent.clone())
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: config.allow_private_addresses,
            }))
            .build()
            .map_err(|e| HttpConfigError(e.to_string()))?;
        let params = json!({
            "type": "object",
            "properties": {"url": {"type": "string", "minLength": 1, "maxLength": 2048}},
            "required": ["url"],
            "additionalProperties": false
        });
        let checks = vec![
            contract(
                "status",
                "The HTTP status code of a GET of `url` (redirects are refused, not followed).",
                params.clone(),
                json!({"type": "integer"}),
                &[
                    Equals,
                    NotEquals,
                    GreaterThan,
                    GreaterThanOrEqual,
                    LessThan,
                    LessThanOrEqual,
                    InSet,
                    Exists,
                    NotExists,
                ],
            ),
            contract(
                "body_hash",
                "The digest of the body of a GET of `url`.",
                params,
                json!({"type": "object", "required": ["algorithm", "value"]}),
                &[
                    Equals,
                    NotEquals,
                    DeepEquals,
                    DeepNotEquals,
                    Exists,
                    NotExists,
                ],
            ),
        ];
        let contract = ProviderContract {
            provider_id: "http"
                .parse()
                .unwrap_or_else(|_| unreachable!("`http` is a valid id")),
            description: "HTTP status and body digests of public HTTPS URLs.".into(),
            checks,
        };
        Ok(Self {
            config,
            client,
            contract,
        })
    }

    /// Checks the URL against the policy before any connection is made.
    async fn vet(&self, url: &Url) -> Result<(), EvidenceResult> {
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            other => {
                return Err(refuse(
                    "scheme_forbidden",
                    format!("scheme {other} is not allowed (https only unless allow_http)"),
                ));
            }
        }
        let Some(host) = url.host_str() else {
            return Err(refuse("params_invalid", "the URL has no host"));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self
            .config
            .allowed_hosts
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(host))
        {
            return Err(refuse(
                "host_not_allowed",
                format!("host {host} is not in allowed_hosts"),
            ));
        }
        if self.config.allow_private_addresses {
            return Ok(());
        }
        let forbidden =
            |ip: IpAddr| refuse("address_forbidden", format!("{ip} is not a public address"));
        if let Ok(ip) = host.parse::<IpAddr>() {
            return if is_public_address(ip) {
                Ok(())
            } else {
                Err(forbidden(ip))
            };
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let found: Vec<SocketAddr> = match tokio::net::lookup_host((host, port)).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => return Err(refuse("dns_failed", format!("{host}: {e}"))),
        };
        match found.iter().find(|a| !is_public_address(a.ip())) {
            Some(private) if !found.iter().any(|a| is_public_address(a.ip())) => {
                Err(forbidden(private.ip()))
            }
            _ => Ok(()),
        }
    }

    /// GETs the URL and reads at most the configured number of bytes.
    async fn fetch(&self, url: Url) -> Result<(u16, Vec<u8>), EvidenceResult> {
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                refuse(
                    "timeout",
                    format!("no answer within {} ms", self.config.timeout_ms),
                )
            } else {
                refuse(
                    "request_failed",
                    format!(
                        "{e}: {}",
                        std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    ),
                )
            }
        };
        let mut response = self.client.get(url).send().await.map_err(failed)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(refuse(
                "redirect_refused",
                format!("the server answered {status}; redirects are not followed"),
            ));
        }
        let limit = self.config.max_response_bytes;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > limit {
                return Err(refuse(
                    "response_too_large",
                    format!("the body is over the limit of {limit} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status.as_u16(), body))
    }
}

#[async_trait]
impl EvidenceProvider for HttpProvider {
    fn contract(&self) -> &ProviderContract {
        &self.contract
    }

    async fn query(
        &self,
        query: &EvidenceQuery,
        _ctx: &EvidenceContext,
    ) -> Result<EvidenceResult, ProviderError> {
        let check = query.check_id.as_str();
        if check != "status" && check != "body_hash" {
            return Ok(refuse(
                "unknown_check",
                format!("http has no check {check}"),
            ));
        }
        let Some(raw) = query
            .params
            .as_ref()
            .and_then(|p| p.get("url"))
            .and_then(|u| u.as_str())
        else {
            return Ok(refuse("params_missing", "params.url is required"));
        };
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(e) => return Ok(refuse("params_invalid", format!("params.url: {e}"))),
        };
        if let Err(refused) = self.vet(&url).await {
            return Ok(refused);
        }
        let (status, body) = match self.fetch(url).await {
            Ok(answer) => answer,
            Err(refused) => return Ok(refused),
        };
        let value = if check == "status" {
            json!(status)
        } else {
            serde_json::to_value(self.config.hash_algorithm.digest(&body)).unwrap_or_default()
        };
        let mut result = answer(value, "url", &json!({"url": raw}));
        result.evidence_ref = Some(EvidenceRef {
            uri: raw.to_owned(),
        });
        Ok(result)
    }
}
