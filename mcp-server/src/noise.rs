//! Unauthenticated noise: what a caller without credentials can make the server write.
//!
//! - [`FailureGate`]: authentication failures are budgeted per source address (GCRA). Within
//!   the budget each failure is audited on its own; past it, the source's requests are refused
//!   as rate limited before their credentials are tried, and every refusal of the source is
//!   counted in memory and written as one audit event per window ([`FailureGate::drain`]),
//!   so a flood costs one trail line per source and window, not one per request.
//! - [`DigestKey`]: the digest of a presented credential or rejected value in an audit event is
//!   an HMAC-SHA-256 under a server secret, so a trail that leaks does not hand out hashes to
//!   test guessed tokens against.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use decision_gate_core::access::{AccessEvent, AccessRefusal, KeyedAlgorithm, KeyedDigest};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::admission::Refusal;
use crate::config::AuthFailuresConfig;

/// Sources whose suppressed refusals are counted one by one; past this many, the rest share
/// one count, so the table's memory is bounded whatever the number of addresses.
const MAX_SOURCES: usize = 10_000;

/// The refusals of one source kept out of the trail in the current window.
#[derive(Debug)]
struct Suppressed {
    transport: &'static str,
    /// Failed or held-back authentications past the budget.
    failures: u64,
    /// Connections closed as they were accepted (over the connection caps).
    connections: u64,
    /// Whether the source spent its failure budget: its requests are held back.
    penalised: bool,
    since: Instant,
}

impl Suppressed {
    fn new(transport: &'static str) -> Self {
        Self {
            transport,
            failures: 0,
            connections: 0,
            penalised: false,
            since: Instant::now(),
        }
    }
}

/// What one source address can make the server write: its authentication failures are
/// budgeted, and the refusals kept out of the trail (failures past the budget, connections over
/// the caps) are counted into one event per kind and window.
#[derive(Debug)]
pub struct SourceGate {
    limiter: DefaultKeyedRateLimiter<Option<IpAddr>>,
    suppressed: Mutex<HashMap<Option<IpAddr>, Suppressed>>,
    window: Duration,
}

/// The key a peer's refusals count under: its address, an IPv6 address by its /64 (one
/// host's share of a network), the overflow key `None` when the table is full.
pub(crate) fn source(peer: Option<SocketAddr>) -> Option<IpAddr> {
    peer.map(|p| match p.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    })
}

impl SourceGate {
    /// The gate a (checked) configuration describes.
    #[must_use]
    pub fn new(config: &AuthFailuresConfig) -> Self {
        let per_minute = NonZeroU32::new(config.per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst)),
            suppressed: Mutex::new(HashMap::new()),
            window: Duration::from_millis(config.audit_window_ms),
        }
    }

    /// Before authentication: a source over its failure budget is refused without its
    /// credentials being tried, and the refusal is counted, not audited on its own.
    #[must_use]
    pub fn held_back(&self, peer: Option<SocketAddr>) -> Option<Refusal> {
        let key = source(peer);
        let mut suppressed = self.table();
        let entry = suppressed.get_mut(&key).filter(|e| e.penalised)?;
        // One attempt goes through each time the budget has a failure to spare.
        let not_until = self.limiter.check_key(&key).err()?;
        entry.failures += 1;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Some(Refusal {
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
            audited: false,
            ..Refusal::new(
                AccessRefusal::RateLimited,
                "too many failed authentication attempts from this address \
                 (server.limits.auth_failures)",
            )
        })
    }

    /// After a failed authentication (or TLS handshake) from `peer`: whether the failure gets
    /// its own audit event. Past the source's budget it is counted instead.
    #[must_use]
    pub fn failed(&self, peer: Option<SocketAddr>, transport: &'static str) -> bool {
        if self.limiter.check_key(&source(peer)).is_ok() {
            return true;
        }
        self.count(peer, transport, |entry| {
            entry.failures += 1;
            entry.penalised = true;
        });
        false
    }

    /// A connection from `peer` closed as it was accepted (over the connection caps): counted
    /// into the source's event of the window, never audited on its own.
    pub fn refused_connection(&self, peer: SocketAddr, transport: &'static str) {
        self.count(Some(peer), transport, |entry| entry.connections += 1);
    }

    /// Counts a suppressed refusal of `peer`'s source; past [`MAX_SOURCES`] sources, into the
    /// shared overflow entry.
    fn count(
        &self,
        peer: Option<SocketAddr>,
        transport: &'static str,
        add: impl FnOnce(&mut Suppressed),
    ) {
        let mut key = source(peer);
        let mut suppressed = self.table();
        if !suppressed.contains_key(&key) && suppressed.len() >= MAX_SOURCES {
            key = None;
        }
        add(suppressed
            .entry(key)
            .or_insert_with(|| Suppressed::new(transport)));
    }

    /// For each source whose window has closed with refusals counted, one audit event per kind
    /// (failed authentications, closed connections) with the count, and the window restarted;
    /// a source with nothing counted for a whole window is forgotten (and no longer held back),
    /// and the limiter's state of sources it no longer restrains is dropped.
    #[must_use]
    pub fn drain(&self, now: Instant) -> Vec<AccessEvent> {
        let mut events = Vec::new();
        let window = self.window;
        self.table().retain(|key, entry| {
            if now.saturating_duration_since(entry.since) < window {
                return true;
            }
            if entry.failures == 0 && entry.connections == 0 {
                return false;
            }
            let lasted = now.saturating_duration_since(entry.since).as_millis();
            let event = |refusal, detail: String| AccessEvent {
                refusal,
                transport: entry.transport.to_owned(),
                principal: None,
                peer: key.map(|ip| ip.to_string()),
                tool: None,
                request_id: None,
                correlation_id: None,
                presented_hash: None,
                detail,
            };
            if entry.failures > 0 {
                events.push(event(
                    AccessRefusal::Unauthenticated,
                    format!(
                        "{} requests refused over {lasted} ms after the source's \
                         authentication-failure budget was spent (server.limits.auth_failures), \
                         audited as one event",
                        entry.failures
                    ),
                ));
            }
            if entry.connections > 0 {
                events.push(event(
                    AccessRefusal::Overloaded,
                    format!(
                        "{} connections closed as they were accepted over {lasted} ms: the source \
                         or the server had as many open as allowed \
                         (server.limits.max_connections_per_source, max_connections), audited as \
                         one event",
                        entry.connections
                    ),
                ));
            }
            entry.penalised &= entry.failures > 0;
            entry.failures = 0;
            entry.connections = 0;
            entry.since = now;
            true
        });
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
        events
    }

    /// How long one counting window lasts.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, Suppressed>> {
        self.suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The server secret that keys the digests of presented credentials in audit events.
#[derive(Clone)]
pub struct DigestKey {
    key: [u8; 32],
}

impl std::fmt::Debug for DigestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DigestKey(..)")
    }
}

impl DigestKey {
    /// Reads the key from `path` (64 hex digits), creating the file with a fresh random key
    /// (mode 0600) when it does not exist, so digests stay comparable across restarts.
    ///
    /// # Errors
    /// The file cannot be read or created, or does not hold 64 hex digits.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        crate::secret_file::load_or_create(path).map(|key| Self { key })
    }

    /// A fresh random key that lives as long as the process.
    ///
    /// # Errors
    /// The operating system has no randomness to give.
    pub fn random() -> Result<Self, String> {
        crate::secret_file::random().map(|key| Self { key })
    }

    /// HMAC-SHA-256 of `raw` under the key.
    #[must_use]
    pub fn digest(&self, raw: &[u8]) -> KeyedDigest {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC takes a key of any length")
        };
        mac.update(raw);
        KeyedDigest {
            algorithm: KeyedAlgorithm::HmacSha256,
            value: hex::encode(mac.finalize().into_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(burst: u32) -> SourceGate {
        SourceGate::new(&AuthFailuresConfig {
            per_minute: 1,
            burst,
            audit_window_ms: 50,
        })
    }

    fn peer(text: &str) -> Option<SocketAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn failures_past_the_budget_are_counted_and_the_source_is_held_back() {
        let gate = gate(2);
        let a = peer("192.0.2.1:1000");
        assert!(gate.held_back(a).is_none(), "a fresh source is tried");
        assert!(gate.failed(a, "http"));
        assert!(gate.failed(a, "http"));
        assert!(
            !gate.failed(a, "http"),
            "the third failure is over the burst"
        );
        let refusal = gate.held_back(a).expect("held back");
        assert_eq!(refusal.refusal, AccessRefusal::RateLimited);
        assert!(!refusal.audited);
        assert!(refusal.retry_after_ms.unwrap() > 0);
        // Another address is unaffected, and so is another port of the same host's /64.
        assert!(gate.held_back(peer("192.0.2.2:1000")).is_none());
        let v6 = peer("[2001:db8::1]:1");
        assert!(gate.failed(v6, "grpc") && gate.failed(v6, "grpc"));
        assert!(!gate.failed(peer("[2001:db8::ffff]:2"), "grpc"), "same /64");
        assert!(
            gate.failed(peer("[2001:db8:0:1::1]:2"), "grpc"),
            "another /64"
        );
    }

    #[test]
    fn each_closed_window_gives_one_event_per_source_with_its_count() {
        let gate = gate(1);
        let a = peer("192.0.2.1:1000");
        assert!(gate.failed(a, "http"));
        assert!(!gate.failed(a, "http"));
        for _ in 0..5 {
            assert!(gate.held_back(a).is_some());
        }
        assert!(gate.drain(Instant::now()).is_empty(), "the window is open");
        let later = Instant::now() + Duration::from_millis(60);
        let events = gate.drain(later);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].peer.as_deref(), Some("192.0.2.1"));
        assert_eq!(events[0].transport, "http");
        assert!(
            events[0].detail.starts_with("6 requests refused"),
            "{}",
            events[0].detail
        );
        // Nothing counted in the next window: no event, and the source is forgotten.
        let quiet = later + Duration::from_millis(60);
        assert!(gate.drain(quiet).is_empty());
        assert!(gate.table().is_empty());
    }

    #[test]
    fn refused_connections_are_counted_into_one_event_and_never_hold_back_logins() {
        let gate = gate(1);
        let a = peer("192.0.2.1:1000");
        for _ in 0..7 {
            gate.refused_connection(a.unwrap(), "grpc");
        }
        assert!(
            gate.held_back(a).is_none(),
            "no failed login: its logins are tried"
        );
        assert!(gate.held_back(a).is_none());
        let events = gate.drain(Instant::now() + Duration::from_millis(60));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].refusal, AccessRefusal::Overloaded);
        assert_eq!(events[0].transport, "grpc");
        assert!(
            events[0].detail.starts_with("7 connections closed"),
            "{}",
            events[0].detail
        );
    }

    #[test]
    fn the_table_is_bounded_whatever_the_number_of_sources() {
        let gate = gate(1);
        for i in 0..(MAX_SOURCES + 50) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap());
            let p = Some(SocketAddr::from((ip, 1)));
            let _ = gate.failed(p, "http");
            let _ = gate.failed(p, "http");
        }
        assert_eq!(
            gate.table().len(),
            MAX_SOURCES + 1,
            "the rest share one count"
        );
        assert_eq!(gate.table()[&None].failures, 50);
    }

    #[test]
    fn digests_are_keyed_and_the_key_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/digest.key");
        let key = DigestKey::load_or_create(&path).unwrap();
        let again = DigestKey::load_or_create(&path).unwrap();
        assert_eq!(key.digest(b"token"), again.digest(b"token"));
        let plain = decision_gate_core::HashAlgorithm::Sha256.digest(b"token");
        assert_ne!(key.digest(b"token").value, plain.value);
        assert_ne!(
            key.digest(b"token"),
            DigestKey::random().unwrap().digest(b"token")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "abc").unwrap();
        assert!(
            DigestKey::load_or_create(&path)
                .unwrap_err()
                .contains("hex")
        );
    }
}
