//! OpenID Connect access tokens: JWTs verified against their issuer's published keys.
//!
//! Each trusted issuer is configured under `[[identity.issuers]]` with its organisation, the
//! audience tokens must name (this server, RFC 8707 resource), the algorithms it may sign with
//! (pinned: never `none`, never an HMAC), and claim rules that grant role bindings. Its keys
//! come from its JWKS (found by OpenID discovery unless `jwks_uri` is given), fetched on first
//! use, again when a token names a key id not seen yet (at most once a second per issuer, so a
//! key rotation at the provider never rejects a valid token and a flood of made-up key ids
//! costs one fetch a second), and again when older than ten minutes. A verified token is
//! remembered, by its BLAKE3 digest, until it expires or for [`FRESH_FOR`], whichever comes
//! first, so a call with a known token costs a hash and a lookup.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use decision_gate_core::HashAlgorithm;
use decision_gate_core::Principal;
use decision_gate_core::identity::{AuthMethod, AuthnError};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use decision_gate_store_enterprise::{PgPool, stored_providers, subject_bindings};

use crate::api_keys::key_bindings;
use crate::rbac::{Binding, Scope};

/// How long a verified token is trusted before it is verified (and its bindings read) again.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// The shortest time between two key fetches of one issuer.
const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Keys older than this are fetched again before use.
const MAX_KEY_AGE: Duration = Duration::from_secs(600);
/// The longest a fetch of metadata or keys may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document or key set read.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// The most keys one issuer's set may hold.
const MAX_KEYS: usize = 100;
/// Verified tokens remembered.
const REMEMBERED: usize = 16_384;
/// The algorithms an issuer may be pinned to: asymmetric signatures only.
pub const ALLOWED_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];
/// The most claim rules per issuer, and grants per rule.
pub const MAX_RULES: usize = 256;
/// The most grants one rule makes.
pub const MAX_GRANTS: usize = 64;
/// The most issuers.
pub const MAX_ISSUERS: usize = 64;

/// `[[identity.issuers]]`: one trusted OpenID provider (also the body that sets one through the
/// admin API).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as tokens carry it in `iss` (https, or http on
    /// loopback).
    pub issuer: String,
    /// The organisation whose tenants its principals may reach; nothing outside it.
    pub organisation_id: i64,
    /// The audience a token must name in `aud`; default: `identity.resource`.
    #[serde(default)]
    pub audience: Option<String>,
    /// The signature algorithms accepted from it.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Its key set; default: `jwks_uri` from `<issuer>/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds (0..=300).
    #[serde(default = "default_leeway_s")]
    pub leeway_s: u64,
    /// `acr` values that show multi-factor authentication.
    #[serde(default)]
    pub mfa_acr: Vec<String>,
    /// `amr` values that show multi-factor authentication.
    #[serde(default = "default_mfa_amr")]
    pub mfa_amr: Vec<String>,
    /// Claim rules: each grants role bindings to tokens whose claim matches.
    #[serde(default)]
    pub rules: Vec<ClaimRule>,
}

/// A claim rule: tokens whose `claim` equals `equals` (or, for a list claim such as `groups`,
/// contain it) are granted `grant` (`<role>@<scope>` bindings within the issuer's
/// organisation).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// The claim's name (top level).
    pub claim: String,
    /// The value it must equal or contain.
    pub equals: String,
    /// The bindings granted.
    pub grant: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".to_owned()]
}
fn default_leeway_s() -> u64 {
    30
}
fn default_mfa_amr() -> Vec<String> {
    ["mfa", "otp", "hwk", "swk", "fpt", "face"]
        .map(str::to_owned)
        .to_vec()
}

/// An http(s) URL usable as an issuer or key-set location: https, or http to a loopback host.
pub(crate) fn url_problem(url: &str) -> Option<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("is not a URL".to_owned());
    };
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => None,
        "http" if loopback => None,
        _ => Some("must be an https URL (http only to a loopback host)".to_owned()),
    }
}

impl IssuerConfig {
    /// Every problem of this issuer's settings, named under `path`.
    pub(crate) fn problems(&self, path: &str, problems: &mut Vec<(String, String)>) {
        let mut problem = |key: &str, message: String| {
            problems.push((format!("{path}.{key}"), message));
        };
        if let Some(p) = url_problem(&self.issuer) {
            problem("issuer", p);
        }
        if let Some(uri) = &self.jwks_uri
            && let Some(p) = url_problem(uri)
        {
            problem("jwks_uri", p);
        }
        if self.organisation_id <= 0 {
            problem(
                "organisation_id",
                format!("must be between 1 and {}", i64::MAX),
            );
        }
        match &self.audience {
            None => problem(
                "audience",
                "missing: set it, or identity.resource, to the audience tokens for this server name".to_owned(),
            ),
            Some(a) if a.is_empty() || a.len() > 1024 => {
                problem("audience", "must be 1 to 1024 bytes".to_owned());
            }
            Some(_) => {}
        }
        if self.algorithms.is_empty() || self.algorithms.len() > ALLOWED_ALGORITHMS.len() {
            problem(
                "algorithms",
                format!("list 1 to {} algorithms", ALLOWED_ALGORITHMS.len()),
            );
        }
        for alg in &self.algorithms {
            if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
                problem(
                    "algorithms",
                    format!(
                        "{alg:?} is not accepted: use one of {} (never none or an HMAC)",
                        ALLOWED_ALGORITHMS.join(", ")
                    ),
                );
            }
        }
        if self.leeway_s > 300 {
            problem(
                "leeway_s",
                format!("must be at most 300 seconds, got {}", self.leeway_s),
            );
        }
        for (key, list) in [("mfa_acr", &self.mfa_acr), ("mfa_amr", &self.mfa_amr)] {
            if list.len() > 32 {
                problem(key, format!("list at most 32 values, got {}", list.len()));
            }
        }
        if self.rules.len() > MAX_RULES {
            problem(
                "rules",
                format!("at most {MAX_RULES} rules, got {}", self.rules.len()),
            );
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.claim.is_empty() {
                problem(&format!("rules[{i}].claim"), "must not be empty".to_owned());
            }
            if rule.grant.is_empty() || rule.grant.len() > MAX_GRANTS {
                problem(
                    &format!("rules[{i}].grant"),
                    format!("list 1 to {MAX_GRANTS} bindings, got {}", rule.grant.len()),
                );
            }
            for (j, grant) in rule.grant.iter().enumerate() {
                match grant.parse::<Binding>() {
                    Err(e) => problem(&format!("rules[{i}].grant[{j}]"), e.to_string()),
                    Ok(Binding {
                        scope: Scope::Organisation(o),
                        ..
                    }) if o != self.organisation_id => problem(
                        &format!("rules[{i}].grant[{j}]"),
                        format!(
                            "an issuer of organisation {} can grant nothing in organisation {o}",
                            self.organisation_id
                        ),
                    ),
                    Ok(_) => {}
                }
            }
        }
    }
}

/// The keys of one issuer, by key id.
struct KeySet {
    keys: HashMap<String, (DecodingKey, AlgorithmFamily, Option<Algorithm>)>,
    fetched_at: Instant,
}

/// One issuer: its settings, its keys and when they were last fetched.
struct Issuer {
    config: IssuerConfig,
    algorithms: Vec<Algorithm>,
    rules: Vec<(String, String, Vec<Binding>)>,
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching, so concurrent calls wait for one fetch; the time of the last.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

/// A verified token as remembered.
struct Verified {
    principal: Principal,
    until: Instant,
}

/// The issuers set through the admin API, as last read, by issuer identifier, each with the
/// settings it was built from (an unchanged issuer keeps its keys across reads).
#[derive(Default)]
struct StoredIssuers {
    read_at: Option<Instant>,
    by_issuer: HashMap<String, (String, Arc<Issuer>)>,
}

/// How long the stored issuers are trusted before they are read again.
const STORED_FRESH_FOR: Duration = Duration::from_millis(500);

/// Verifies OIDC access tokens from the configured issuers and those stored through the admin
/// API.
pub struct OidcVerifier {
    issuers: Vec<Arc<Issuer>>,
    stored: RwLock<StoredIssuers>,
    /// Held while the stored issuers are read, so concurrent calls wait for one read.
    reading: tokio::sync::Mutex<()>,
    /// Where stored role bindings and issuers are read (none in unit tests).
    bindings: Option<PgPool>,
    http: reqwest::Client,
    step_up_max_age_s: u64,
    verified: Mutex<LruCache<[u8; 32], Arc<Verified>>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field(
                "issuers",
                &self
                    .issuers
                    .iter()
                    .map(|i| &i.config.issuer)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn refused(detail: impl Into<String>, token: &[u8]) -> AuthnError {
    AuthnError::Refused {
        detail: detail.into(),
        presented: Some(HashAlgorithm::Sha256.digest(token)),
    }
}

/// Whether `token` has the shape of a JWT (three base64url parts).
#[must_use]
pub fn looks_like_jwt(token: &[u8]) -> bool {
    token.iter().filter(|b| **b == b'.').count() == 2
        && token
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl OidcVerifier {
    /// A verifier for `issuers` (checked by the configuration); step-up needs an
    /// authentication at most `step_up_max_age_s` old.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(
        issuers: &[IssuerConfig],
        bindings: Option<PgPool>,
        step_up_max_age_s: u64,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the OIDC HTTP client: {e}"))?;
        let issuers = issuers.iter().map(|c| Arc::new(Issuer::new(c))).collect();
        Ok(Self {
            issuers,
            stored: RwLock::new(StoredIssuers::default()),
            reading: tokio::sync::Mutex::new(()),
            bindings,
            http,
            step_up_max_age_s,
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        })
    }

    /// Forgets every verified token and the stored issuers, so the next call verifies and reads
    /// them again (the database announced a change to a binding or a provider). Fetched keys
    /// are kept.
    pub fn forget(&self) {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.stored
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .read_at = None;
    }

    /// Whether any issuer can be trusted: one is configured, or the database may hold some.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty() && self.bindings.is_none()
    }

    /// The issuer of `iss`: a configured one, else one stored through the admin API (read at
    /// most once a [`STORED_FRESH_FOR`], one read at a time).
    async fn issuer(&self, iss: &str) -> Result<Option<Arc<Issuer>>, AuthnError> {
        if let Some(found) = self.issuers.iter().find(|i| i.config.issuer == iss) {
            return Ok(Some(found.clone()));
        }
        let Some(pool) = &self.bindings else {
            return Ok(None);
        };
        let fresh = |stored: &StoredIssuers| {
            stored
                .read_at
                .is_some_and(|at| at.elapsed() < STORED_FRESH_FOR)
        };
        let lookup = |stored: &StoredIssuers| stored.by_issuer.get(iss).map(|(_, i)| i.clone());
        {
            let stored = self.stored.read().unwrap_or_else(PoisonError::into_inner);
            if fresh(&stored) {
                return Ok(lookup(&stored));
            }
        }
        let _reading = self.reading.lock().await;
        {
            let stored = self.stored.read().unwrap_or_else(PoisonError::into_inner);
            if fresh(&stored) {
                return Ok(lookup(&stored));
            }
        }
        let rows = stored_providers(pool)
            .await
            .map_err(|e| AuthnError::Unavailable(format!("reading identity providers: {e}")))?;
        let mut stored = self.stored.write().unwrap_or_else(PoisonError::into_inner);
        let mut by_issuer = HashMap::with_capacity(rows.len());
        for row in rows {
            let kept = stored
                .by_issuer
                .get(&row.issuer)
                .filter(|(json, _)| *json == row.settings_json)
                .map(|(_, i)| i.clone());
            let issuer = match kept {
                Some(issuer) => issuer,
                None => match serde_json::from_str::<IssuerConfig>(&row.settings_json) {
                    // The organisation is the row's, whatever the document says.
                    Ok(config) if config.issuer == row.issuer => {
                        Arc::new(Issuer::new(&IssuerConfig {
                            organisation_id: row.organisation_id,
                            ..config
                        }))
                    }
                    _ => {
                        tracing::warn!(issuer = %row.issuer, "stored identity provider settings do not parse; skipped");
                        continue;
                    }
                },
            };
            by_issuer.insert(row.issuer, (row.settings_json, issuer));
        }
        *stored = StoredIssuers {
            read_at: Some(Instant::now()),
            by_issuer,
        };
        Ok(lookup(&stored))
    }

    /// The issuer identifiers, for protected-resource metadata.
    pub fn issuer_ids(&self) -> impl Iterator<Item = &str> {
        self.issuers.iter().map(|i| i.config.issuer.as_str())
    }

    /// How recent an authentication must be for a step-up.
    #[must_use]
    pub fn step_up_max_age_s(&self) -> u64 {
        self.step_up_max_age_s
    }

    /// The principal of a valid token from a configured issuer, or a refusal naming what is
    /// wrong with it.
    ///
    /// # Errors
    /// [`AuthnError::Refused`] for any token that is not valid; [`AuthnError::Unavailable`]
    /// when the issuer's keys cannot be fetched.
    pub async fn verify(&self, token: &[u8]) -> Result<Principal, AuthnError> {
        let digest = *blake3::hash(token).as_bytes();
        let now = Instant::now();
        if let Some(known) = self
            .verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&digest)
            .cloned()
            && now < known.until
        {
            return Ok(known.principal.clone());
        }
        let (principal, expires_in) = self.verify_uncached(token, &digest).await?;
        let until = now + expires_in.min(FRESH_FOR);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(
                digest,
                Arc::new(Verified {
                    principal: principal.clone(),
                    until,
                }),
            );
        Ok(principal)
    }

    async fn verify_uncached(
        &self,
        token: &[u8],
        digest: &[u8; 32],
    ) -> Result<(Principal, Duration), AuthnError> {
        let text =
            std::str::from_utf8(token).map_err(|_| refused("the token is not text", token))?;
        let header = jsonwebtoken::decode_header(text)
            .map_err(|e| refused(format!("the token's header is not valid: {e}"), token))?;
        // The issuer is read before the signature is checked only to choose whose keys to check
        // it with; the verification below requires the same `iss`.
        let unverified = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(text)
            .map_err(|e| refused(format!("the token's claims are not valid: {e}"), token))?;
        let iss = unverified
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let issuer = self
            .issuer(iss)
            .await?
            .ok_or_else(|| refused("the token's issuer is not trusted by this server", token))?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(refused(
                format!(
                    "the token is signed with {:?}, which its issuer is not allowed",
                    header.alg
                ),
                token,
            ));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| refused("the token names no key id (kid)", token))?;
        let (key, family, key_alg) = issuer
            .key(kid, &self.http)
            .await?
            .ok_or_else(|| refused("the token's key id is not among its issuer's keys", token))?;
        if family != header.alg.family() || key_alg.is_some_and(|a| a != header.alg) {
            return Err(refused(
                "the token's algorithm does not match its key",
                token,
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&issuer.config.issuer]);
        validation.set_audience(&[issuer.config.audience.as_deref().unwrap_or_default()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = issuer.config.leeway_s;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(text, &key, &validation)
            .map_err(|e| refused(format!("the token is not valid: {e}"), token))?
            .claims;
        let stored = match (&self.bindings, claims.get("sub").and_then(Value::as_str)) {
            (Some(pool), Some(sub)) => subject_bindings(pool, &issuer.config.issuer, sub)
                .await
                .map_err(|e| AuthnError::Unavailable(format!("reading role bindings: {e}")))?
                .into_iter()
                // A binding outside the issuer's organisation grants nothing.
                .filter(|b| b.scope.organisation_id == issuer.config.organisation_id)
                .filter_map(|b| key_bindings(&b.scope, std::slice::from_ref(&b.role)).ok())
                .flatten()
                .collect(),
            _ => Vec::new(),
        };
        let principal = issuer.principal(&claims, stored, digest);
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        let now = jsonwebtoken::get_current_timestamp();
        Ok((principal, Duration::from_secs(exp.saturating_sub(now))))
    }
}

impl Issuer {
    /// An issuer of `config` (checked), with no keys fetched yet.
    fn new(config: &IssuerConfig) -> Self {
        Self {
            algorithms: config
                .algorithms
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect(),
            rules: config
                .rules
                .iter()
                .map(|r| {
                    (
                        r.claim.clone(),
                        r.equals.clone(),
                        r.grant.iter().filter_map(|g| g.parse().ok()).collect(),
                    )
                })
                .collect(),
            config: config.clone(),
            keys: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    /// The key `kid` from keys fetched less than [`MAX_KEY_AGE`] ago.
    fn fresh_key(&self, kid: &str) -> Option<(DecodingKey, AlgorithmFamily, Option<Algorithm>)> {
        let set = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()?;
        if set.fetched_at.elapsed() >= MAX_KEY_AGE {
            return None;
        }
        set.keys.get(kid).cloned()
    }

    /// The key `kid`, fetching the set when it is unknown or old: one fetch at a time, at most
    /// one a [`MIN_REFRESH`], and a call that waited while another fetched takes that fetch's
    /// answer instead of fetching again.
    async fn key(
        &self,
        kid: &str,
        http: &reqwest::Client,
    ) -> Result<Option<(DecodingKey, AlgorithmFamily, Option<Algorithm>)>, AuthnError> {
        if let Some(found) = self.fresh_key(kid) {
            return Ok(Some(found));
        }
        let asked = Instant::now();
        let mut last = self.fetching.lock().await;
        if let Some(found) = self.fresh_key(kid) {
            return Ok(Some(found));
        }
        let stale = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if last.is_some_and(|at| at >= asked) {
            // A fetch began after this call asked and did not bring the key.
            return Ok(stale.and_then(|set| set.keys.get(kid).cloned()));
        }
        if let Some(at) = *last {
            let since = at.elapsed();
            if since < MIN_REFRESH {
                tokio::time::sleep(MIN_REFRESH - since).await;
            }
        }
        *last = Some(Instant::now());
        match self.fetch(http).await {
            Ok(set) => {
                let found = set.keys.get(kid).cloned();
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(set));
                Ok(found)
            }
            // Keys fetched earlier stay usable while the provider cannot be reached; with none,
            // nothing can be verified.
            Err(e) => match stale.and_then(|set| set.keys.get(kid).cloned()) {
                Some(found) => {
                    tracing::warn!(issuer = %self.config.issuer, "keeping old keys: {e}");
                    Ok(Some(found))
                }
                None => Err(AuthnError::Unavailable(format!(
                    "the keys of {}: {e}",
                    self.config.issuer
                ))),
            },
        }
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<KeySet, String> {
        let jwks_uri = match &self.config.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc = get_json(http, &url).await?;
                if doc.get("issuer").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
                    return Err(format!("{url} names another issuer"));
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("{url} has no jwks_uri"))?;
                if let Some(p) = url_problem(uri) {
                    return Err(format!("its jwks_uri {p}"));
                }
                uri.to_owned()
            }
        };
        let doc = get_json(http, &jwks_uri).await?;
        let listed = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{jwks_uri} holds no key set"))?;
        let mut keys = HashMap::new();
        for value in listed.iter().take(MAX_KEYS) {
            // Keys of other types or uses are skipped, not fatal: a set may hold encryption
            // keys or algorithms this server does not verify.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                continue;
            };
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let family = match jwk.algorithm {
                AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                // A symmetric key in a public set is never used: no HMAC verification.
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, (key, family, alg));
            }
        }
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    /// The principal a verified token's claims describe.
    fn principal(
        &self,
        claims: &Map<String, Value>,
        mut bindings: Vec<Binding>,
        digest: &[u8; 32],
    ) -> Principal {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        for (claim, equals, grant) in &self.rules {
            let matched = match claims.get(claim) {
                Some(Value::String(s)) => s == equals,
                Some(Value::Array(items)) => items.iter().any(|v| v.as_str() == Some(equals)),
                _ => false,
            };
            if matched {
                bindings.extend(grant.iter().copied());
            }
        }
        bindings.sort();
        bindings.dedup();
        let acr = text("acr");
        let amr_shows_mfa = claims
            .get("amr")
            .and_then(Value::as_array)
            .is_some_and(|amr| {
                amr.iter()
                    .filter_map(Value::as_str)
                    .any(|m| self.config.mfa_amr.iter().any(|x| x == m))
            });
        let mfa_level = match &acr {
            Some(acr) if self.config.mfa_acr.contains(acr) => Some(acr.clone()),
            _ if amr_shows_mfa => Some("amr".to_owned()),
            _ => None,
        };
        // A principal whose bindings all lie in one tenant (or namespace) calls it home.
        let tenants: Vec<_> = bindings
            .iter()
            .map(|b| match b.scope {
                Scope::Organisation(_) => None,
                Scope::Tenant(t) => Some((t, None)),
                Scope::Namespace(t, n) => Some((t, Some(n))),
            })
            .collect();
        let home = match tenants.split_first() {
            Some((first, rest)) if first.is_some() && rest.iter().all(|t| t == first) => *first,
            _ => None,
        };
        Principal {
            subject: text("sub").unwrap_or_default(),
            issuer: Some(self.config.issuer.clone()),
            credential_id: Some(
                text("jti").unwrap_or_else(|| format!("jwt:{}", hex::encode(&digest[..8]))),
            ),
            auth_method: AuthMethod::Oidc,
            organisation_id: Some(self.config.organisation_id),
            tenant_id: home.map(|(t, _)| t),
            namespace_id: home.and_then(|(_, n)| n),
            actions: None,
            roles: bindings.iter().map(ToString::to_string).collect(),
            mfa_level,
            auth_time: claims.get("auth_time").and_then(Value::as_u64),
        }
    }
}

/// GETs a JSON document of at most [`MAX_DOCUMENT_BYTES`].
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("{url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("{url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer() -> IssuerConfig {
        IssuerConfig {
            issuer: "https://id.example.com".into(),
            organisation_id: 1,
            audience: Some("https://dg.example.com/mcp".into()),
            algorithms: default_algorithms(),
            jwks_uri: None,
            leeway_s: default_leeway_s(),
            mfa_acr: Vec::new(),
            mfa_amr: default_mfa_amr(),
            rules: Vec::new(),
        }
    }

    fn problems(config: &IssuerConfig) -> Vec<(String, String)> {
        let mut found = Vec::new();
        config.problems("identity.issuers[0]", &mut found);
        found
    }

    fn rule(grants: usize) -> ClaimRule {
        ClaimRule {
            claim: "groups".into(),
            equals: "g".into(),
            grant: vec!["agent@tenant:1".into(); grants],
        }
    }

    #[test]
    fn every_list_and_number_of_an_issuer_is_bounded_and_named() {
        assert!(problems(&issuer()).is_empty());
        let named = |config: IssuerConfig, key: &str| {
            let found = problems(&config);
            assert!(
                found
                    .iter()
                    .any(|(path, _)| path.starts_with(&format!("identity.issuers[0].{key}"))),
                "{key}: {found:?}"
            );
        };
        named(
            IssuerConfig {
                rules: vec![rule(1); MAX_RULES + 1],
                ..issuer()
            },
            "rules",
        );
        named(
            IssuerConfig {
                rules: vec![rule(MAX_GRANTS + 1)],
                ..issuer()
            },
            "rules[0].grant",
        );
        named(
            IssuerConfig {
                rules: vec![rule(0)],
                ..issuer()
            },
            "rules[0].grant",
        );
        named(
            IssuerConfig {
                mfa_acr: vec!["x".into(); 33],
                ..issuer()
            },
            "mfa_acr",
        );
        named(
            IssuerConfig {
                mfa_amr: vec!["x".into(); 33],
                ..issuer()
            },
            "mfa_amr",
        );
        named(
            IssuerConfig {
                leeway_s: 301,
                ..issuer()
            },
            "leeway_s",
        );
        named(
            IssuerConfig {
                algorithms: Vec::new(),
                ..issuer()
            },
            "algorithms",
        );
        named(
            IssuerConfig {
                algorithms: vec!["HS256".into()],
                ..issuer()
            },
            "algorithms",
        );
        named(
            IssuerConfig {
                algorithms: vec!["none".into()],
                ..issuer()
            },
            "algorithms",
        );
        named(
            IssuerConfig {
                audience: None,
                ..issuer()
            },
            "audience",
        );
        named(
            IssuerConfig {
                issuer: "http://id.example.com".into(),
                ..issuer()
            },
            "issuer",
        );
        let mut foreign = rule(1);
        foreign.grant = vec!["org_owner@organisation:2".into()];
        named(
            IssuerConfig {
                rules: vec![foreign],
                ..issuer()
            },
            "rules[0].grant[0]",
        );
        // At the limits, nothing is refused.
        assert!(
            problems(&IssuerConfig {
                rules: vec![rule(MAX_GRANTS); MAX_RULES],
                mfa_acr: vec!["x".into(); 32],
                leeway_s: 300,
                issuer: "http://127.0.0.1:9/".into(),
                ..issuer()
            })
            .is_empty()
        );
    }

    #[test]
    fn only_jwt_shaped_tokens_go_to_the_verifier() {
        assert!(looks_like_jwt(b"aGVhZA.cGF5bG9hZA.c2ln"));
        assert!(!looks_like_jwt(b"dg_0123456789abcdef_00"));
        assert!(!looks_like_jwt(b"a.b"));
        assert!(!looks_like_jwt(b"a.b.c d"));
    }
}
