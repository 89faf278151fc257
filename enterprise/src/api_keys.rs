//! API keys: `dg_<key id>_<secret>`, issued once, stored as a keyed BLAKE3 hash of the secret
//! (the key is the server's pepper, a file on the replicas, never in the database), and
//! checked by [`ApiKeys`] in front of the server's other credentials. A key read
//! from the database is trusted for at most [`FRESH_FOR`], so a revocation or an expiry takes
//! effect on every replica within a second (ADR 0015).

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use decision_gate_core::HashAlgorithm;
use decision_gate_core::Principal;
use decision_gate_core::identity::{AuthMethod, AuthnError};
use decision_gate_store_enterprise::{
    ApiKeyRecord, KeyScope, NewApiKey, PgError, PgPool, Successor, api_key, create_api_key,
    rotate_api_key,
};
use lru::LruCache;

use crate::rbac::{Binding, Role, Scope};

/// Every key starts with this.
pub const PREFIX: &str = "dg_";
/// How long a key read from the database is trusted: revocation reaches every replica within
/// this plus one database read.
pub const FRESH_FOR: Duration = Duration::from_millis(500);
/// Keys remembered per replica.
const REMEMBERED: usize = 16_384;
/// Hex digits of a key id (64 random bits: ids are public, so they only need to be unique).
const KEY_ID_HEX: usize = 16;
/// Hex digits of a secret (256 random bits).
const SECRET_HEX: usize = 64;
/// The issuer of the principals API keys authenticate as.
pub const ISSUER: &str = "decision-gate";

/// The server's API-key pepper: keys the hash of every secret.
#[derive(Clone)]
pub struct Pepper {
    key: [u8; 32],
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(..)")
    }
}

impl Pepper {
    /// The pepper in `path`, `None` when the file does not exist.
    ///
    /// # Errors
    /// The file cannot be read or does not hold 64 hex digits.
    pub fn load(path: &Path) -> Result<Option<Self>, String> {
        Ok(decision_gate_mcp::secret_file::load(path)?.map(|key| Self { key }))
    }

    /// The pepper in `path`, created (mode 0600) when the file does not exist.
    ///
    /// # Errors
    /// The file cannot be read or created, or does not hold 64 hex digits.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        decision_gate_mcp::secret_file::load_or_create(path).map(|key| Self { key })
    }

    /// The keyed hash of a key's secret, bound to its id.
    fn hash(&self, key_id: &str, secret: &str) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(key_id.as_bytes());
        h.update(&[0]);
        h.update(secret.as_bytes());
        h.finalize()
    }
}

/// A freshly issued key: the one time its secret is seen.
pub struct IssuedKey {
    /// The key's id (public; lists and audit events name it).
    pub key_id: String,
    /// `dg_<key id>_<secret>`: what the client presents. Shown once, never stored.
    pub token: String,
    /// The keyed hash to store.
    pub secret_hash: String,
}

impl std::fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    /// A new random key hashed with `pepper`.
    ///
    /// # Errors
    /// The operating system has no randomness to give.
    pub fn new(pepper: &Pepper) -> Result<Self, String> {
        let random = decision_gate_mcp::secret_file::random()?;
        let key_id = hex::encode(&random[..KEY_ID_HEX / 2]);
        let secret = hex::encode(decision_gate_mcp::secret_file::random()?);
        Ok(Self {
            secret_hash: pepper.hash(&key_id, &secret).to_hex().to_string(),
            token: format!("{PREFIX}{key_id}_{secret}"),
            key_id,
        })
    }
}

/// The key id and secret of a presented key, if it has the key's shape.
fn parse(token: &[u8]) -> Option<(&str, &str)> {
    let token = std::str::from_utf8(token).ok()?;
    let rest = token.strip_prefix(PREFIX)?;
    let (key_id, secret) = rest.split_once('_')?;
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (lower_hex(key_id, KEY_ID_HEX) && lower_hex(secret, SECRET_HEX)).then_some((key_id, secret))
}

/// The bindings a key's roles have at its scope.
///
/// # Errors
/// A role name that is unknown or cannot be bound at the key's scope.
pub fn key_bindings(scope: &KeyScope, roles: &[String]) -> Result<Vec<Binding>, String> {
    let at = match (scope.tenant_id, scope.namespace_id) {
        (Some(t), Some(n)) => Scope::Namespace(t, n),
        (Some(t), None) => Scope::Tenant(t),
        _ => Scope::Organisation(scope.organisation_id),
    };
    roles
        .iter()
        .map(|name| {
            let role = Role::from_name(name).ok_or_else(|| format!("unknown role {name:?}"))?;
            Binding::new(role, at).map_err(|e| e.to_string())
        })
        .collect()
}

/// Issues a key: checks its roles against its scope, stores its hash, and answers the key (the
/// one time its secret is seen) with the stored record.
///
/// # Errors
/// [`PgError::Invalid`] naming the field for roles that cannot be bound at the scope, a bad
/// name or lifetime; [`PgError::MissingParent`] for a scope that does not exist;
/// [`PgError::Unavailable`] otherwise.
pub async fn issue(
    pool: &PgPool,
    pepper: &Pepper,
    scope: KeyScope,
    roles: &[String],
    name: &str,
    created_by: &str,
    expires_in_s: Option<i64>,
) -> Result<(IssuedKey, ApiKeyRecord), PgError> {
    let (key, new) = prepare(pepper, scope, roles, name, created_by, expires_in_s)?;
    let stored = create_api_key(pool, &new).await?;
    Ok((key, stored))
}

/// Rotates key `old_key_id`: a fresh key with its scope, roles and name, the old one ending
/// `overlap_s` seconds from now. Answers the new key (the one time its secret is seen), the
/// old record as it now is, and the new record.
///
/// # Errors
/// As [`rotate_api_key`].
pub async fn rotate(
    pool: &PgPool,
    pepper: &Pepper,
    old_key_id: &str,
    created_by: &str,
    overlap_s: i64,
    expires_in_s: Option<i64>,
) -> Result<(IssuedKey, ApiKeyRecord, ApiKeyRecord), PgError> {
    let key = IssuedKey::new(pepper).map_err(|message| PgError::Invalid {
        field: "key",
        message,
    })?;
    let successor = Successor {
        key_id: key.key_id.clone(),
        secret_hash: key.secret_hash.clone(),
        created_by: created_by.to_owned(),
        expires_in_s,
    };
    let (old, new) = rotate_api_key(pool, old_key_id, &successor, overlap_s).await?;
    Ok((key, old, new))
}

/// A fresh key and the row that stores it, its roles checked against its scope.
///
/// # Errors
/// [`PgError::Invalid`] for roles that cannot be bound at the scope (or none, or too many), or
/// when the system has no randomness.
pub fn prepare(
    pepper: &Pepper,
    scope: KeyScope,
    roles: &[String],
    name: &str,
    created_by: &str,
    expires_in_s: Option<i64>,
) -> Result<(IssuedKey, NewApiKey), PgError> {
    if roles.is_empty() || roles.len() > Role::ALL.len() {
        return Err(PgError::Invalid {
            field: "roles",
            message: format!("give 1 to {} roles, got {}", Role::ALL.len(), roles.len()),
        });
    }
    key_bindings(&scope, roles).map_err(|message| PgError::Invalid {
        field: "roles",
        message,
    })?;
    let key = IssuedKey::new(pepper).map_err(|message| PgError::Invalid {
        field: "key",
        message,
    })?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let new = NewApiKey {
        key_id: key.key_id.clone(),
        scope,
        roles,
        name: name.to_owned(),
        secret_hash: key.secret_hash.clone(),
        created_by: created_by.to_owned(),
        expires_in_s,
    };
    Ok((key, new))
}

/// A key as the authenticator remembers it.
struct Known {
    hash: blake3::Hash,
    usable: bool,
    principal: Principal,
}

impl Known {
    fn of(record: &ApiKeyRecord) -> Result<Self, AuthnError> {
        let stored = |what: &str| {
            AuthnError::Unavailable(format!(
                "api key {}: stored {what} is invalid",
                record.key_id
            ))
        };
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&record.secret_hash, &mut hash).map_err(|_| stored("hash"))?;
        let bindings = key_bindings(&record.scope, &record.roles).map_err(|_| stored("roles"))?;
        Ok(Self {
            hash: blake3::Hash::from_bytes(hash),
            usable: record.usable,
            principal: Principal {
                subject: format!("api_key:{}", record.key_id),
                issuer: Some(ISSUER.to_owned()),
                credential_id: Some(record.key_id.clone()),
                auth_method: AuthMethod::ApiKey,
                organisation_id: Some(record.scope.organisation_id),
                tenant_id: record.scope.tenant_id,
                namespace_id: record.scope.namespace_id,
                actions: None,
                roles: bindings.iter().map(ToString::to_string).collect(),
                mfa_level: None,
                auth_time: None,
            },
        })
    }
}

type Remembered = (Instant, Option<Arc<Known>>);

/// Checks presented API keys against the stored ones.
pub struct ApiKeys {
    pool: PgPool,
    pepper: Option<Pepper>,
    keys: Mutex<LruCache<String, Remembered>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("enabled", &self.pepper.is_some())
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Keys read through `pool`, hashed with `pepper` (no pepper: every key is refused, as the
    /// server cannot check one).
    #[must_use]
    pub fn new(pool: PgPool, pepper: Option<Pepper>) -> Self {
        Self {
            pool,
            pepper,
            keys: Mutex::new(LruCache::new(
                NonZeroUsize::new(REMEMBERED).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Forgets every key read, so the next call reads them again (the database announced a
    /// change).
    pub fn forget(&self) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The key `key_id` as last read, read again when older than [`FRESH_FOR`].
    async fn known(&self, key_id: &str) -> Result<Option<Arc<Known>>, AuthnError> {
        let now = Instant::now();
        if let Some((read_at, known)) = self
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            && now.duration_since(*read_at) < FRESH_FOR
        {
            return Ok(known.clone());
        }
        let record = api_key(&self.pool, key_id)
            .await
            .map_err(|e| AuthnError::Unavailable(format!("reading the API key: {e}")))?;
        let known = record.as_ref().map(Known::of).transpose()?.map(Arc::new);
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put(key_id.to_owned(), (now, known.clone()));
        Ok(known)
    }
}

impl ApiKeys {
    /// The principal of a presented key (`dg_…`), or a refusal.
    ///
    /// # Errors
    /// [`AuthnError::Refused`] for a malformed, unknown, wrong, revoked or expired key (and for
    /// every key when the server has no pepper); [`AuthnError::Unavailable`] when the key
    /// cannot be read.
    pub async fn authenticate(&self, token: &[u8]) -> Result<Principal, AuthnError> {
        let refused = |detail: &str| AuthnError::Refused {
            detail: detail.to_owned(),
            presented: Some(HashAlgorithm::Sha256.digest(token)),
        };
        let Some((key_id, secret)) = parse(token) else {
            return Err(refused("the API key is malformed"));
        };
        let Some(pepper) = &self.pepper else {
            return Err(refused("API keys are not set up on this server"));
        };
        let presented = pepper.hash(key_id, secret);
        match self.known(key_id).await? {
            // `blake3::Hash` compares in constant time. A key's state is told only to a caller
            // who holds its secret.
            Some(known) if known.hash == presented => {
                if known.usable {
                    Ok(known.principal.clone())
                } else {
                    Err(refused("the API key is revoked or expired"))
                }
            }
            _ => Err(refused("the API key is not recognised")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_keys_parse_and_hash_to_what_is_stored() {
        let pepper = Pepper { key: [7; 32] };
        let key = IssuedKey::new(&pepper).unwrap();
        let (id, secret) = parse(key.token.as_bytes()).expect("an issued key has the shape");
        assert_eq!(id, key.key_id);
        assert_eq!(pepper.hash(id, secret).to_hex().as_str(), key.secret_hash);
        // Another pepper, another id or another secret gives another hash.
        assert_ne!(
            Pepper { key: [8; 32] }.hash(id, secret),
            pepper.hash(id, secret)
        );
        assert_ne!(
            pepper.hash("0000000000000000", secret),
            pepper.hash(id, secret)
        );
        let mut other = secret.to_owned();
        other.replace_range(0..1, if secret.starts_with('0') { "1" } else { "0" });
        assert_ne!(pepper.hash(id, &other), pepper.hash(id, secret));
        assert!(
            !format!("{key:?}").contains(secret),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn only_the_exact_shape_parses() {
        let secret = "a".repeat(SECRET_HEX);
        let good = format!("dg_0123456789abcdef_{secret}");
        assert!(parse(good.as_bytes()).is_some());
        for bad in [
            format!("dg_0123456789ABCDEF_{secret}"),
            format!("dg_0123456789abcde_{secret}"),
            format!("dg_0123456789abcdef_{secret}a"),
            format!("dg_0123456789abcdef_{}", "a".repeat(SECRET_HEX - 1)),
            format!("dg_0123456789abcdef_{}g", "a".repeat(SECRET_HEX - 1)),
            format!("dg_0123456789abcdef_{}", "A".repeat(SECRET_HEX)),
            format!("xx_0123456789abcdef_{secret}"),
            "dg_".to_owned(),
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_key_binds_its_roles_at_its_scope() {
        let t = decision_gate_core::TenantId::new(7).unwrap();
        let n = decision_gate_core::NamespaceId::new(2).unwrap();
        let scope = |tenant, namespace| KeyScope {
            organisation_id: 1,
            tenant_id: tenant,
            namespace_id: namespace,
        };
        let b = key_bindings(&scope(Some(t), Some(n)), &["agent".into()]).unwrap();
        assert_eq!(b[0].to_string(), "agent@namespace:7/2");
        let b = key_bindings(&scope(None, None), &["org_owner".into()]).unwrap();
        assert_eq!(b[0].to_string(), "org_owner@organisation:1");
        assert!(key_bindings(&scope(Some(t), None), &["org_owner".into()]).is_err());
        assert!(key_bindings(&scope(Some(t), None), &["root".into()]).is_err());
    }
}
