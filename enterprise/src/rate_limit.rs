//! Rate limits per credential and per tenant (ADR 0016): [`PlanRateLimit`], the enterprise
//! [`RateLimit`]. Each tenant's plan sets the rates (`[usage.rates]` those of a plan that sets
//! none). Rates are GCRA: in this process by default (`governor`), shared by every replica
//! through Redis when `[usage] redis_url` is set. When Redis does not answer within its time
//! budget, the replica decides with its local limiter — the same rates, so never without a
//! limit — counts the decision in `decision_gate_fallbacks_total{component="rate_limit_redis"}`,
//! and reports the change of state (lost, restored) once each.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use decision_gate_core::TenantId;
use decision_gate_core::access::{RateError, RateLimit, RateScope, RequestContext};
use decision_gate_mcp::metrics::Metrics;
use decision_gate_store_enterprise::{PlanRates, Rate};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::plans::PlanCache;

/// Admissions between two sweeps of the local limiters' idle keys.
const SWEEP_EVERY: u64 = 4096;
/// The shortest pause between two attempts to reach Redis while it is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// GCRA in one atomic script (the generic cell rate algorithm: each key holds its theoretical
/// arrival time). `KEYS[1]` the key, `ARGV[1]` the emission interval in microseconds,
/// `ARGV[2]` the burst. Answers 0 when admitted, else the microseconds until it would be.
const GCRA_SCRIPT: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - interval * burst
if now < allowed_at then return allowed_at - now end
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil((next_tat - now) / 1000) + 1)
return 0
";

/// Where the shared limiter lives and how long a decision may wait for it.
#[derive(Clone, Debug)]
pub struct SharedSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// What every key starts with: the same on every replica of a deployment, different
    /// between deployments sharing one Redis.
    pub key_prefix: String,
    /// The time budget of one decision; past it the local limiter decides.
    pub timeout: Duration,
}

/// Reports the shared limiter's state changes: `Some(reason)` when it is lost (decisions are
/// local from now on), `None` when it answers again.
pub type OnStateChange = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// The shared limiter: a Redis connection, made on first use and again after a failure (at
/// most once per [`RECONNECT_EVERY`]).
struct Shared {
    client: redis::Client,
    key_prefix: String,
    timeout: Duration,
    script: redis::Script,
    /// The connection every decision clones (a multiplexed handle); `None` until made.
    connection: std::sync::RwLock<Option<redis::aio::ConnectionManager>>,
    /// Held while connecting, with the time of the last attempt.
    connecting: tokio::sync::Mutex<Option<Instant>>,
    lost: AtomicBool,
    on_change: OnStateChange,
}

impl Shared {
    fn current(&self) -> Option<redis::aio::ConnectionManager> {
        self.connection.read().ok().and_then(|c| c.clone())
    }

    fn drop_connection(&self) {
        if let Ok(mut c) = self.connection.write() {
            *c = None;
        }
    }

    async fn connection(&self) -> Result<redis::aio::ConnectionManager, String> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let mut last_attempt = self.connecting.lock().await;
        // Another decision may have connected while this one waited.
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        if let Some(tried) = *last_attempt
            && tried.elapsed() < RECONNECT_EVERY
        {
            return Err("Redis was unreachable at the last attempt".to_owned());
        }
        *last_attempt = Some(Instant::now());
        let connecting = redis::aio::ConnectionManager::new(self.client.clone());
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(conn)) => {
                if let Ok(mut c) = self.connection.write() {
                    *c = Some(conn.clone());
                }
                Ok(conn)
            }
            Ok(Err(e)) => Err(format!("connecting to Redis: {e}")),
            Err(_) => Err("connecting to Redis timed out".to_owned()),
        }
    }

    /// The shared decision for `key`: `Ok(None)` admitted, `Ok(Some(wait))` refused.
    async fn decide(&self, key: &str, rate: Rate) -> Result<Option<Duration>, String> {
        let mut conn = self.connection().await?;
        let interval_us = (1_000_000 / u64::from(rate.per_second.max(1))).max(1);
        let mut invocation = self.script.key(format!("{}:{key}", self.key_prefix));
        invocation.arg(interval_us).arg(rate.burst);
        let answer: Result<Result<u64, redis::RedisError>, _> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await;
        match answer {
            Ok(Ok(0)) => Ok(None),
            Ok(Ok(wait_us)) => Ok(Some(Duration::from_micros(wait_us))),
            Ok(Err(e)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
                    // Start again with a fresh connection once Redis is back.
                    self.drop_connection();
                }
                Err(format!("Redis: {e}"))
            }
            Err(_) => Err(format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }

    fn note(&self, failure: Option<&str>) {
        let lost = failure.is_some();
        if self.lost.swap(lost, Ordering::SeqCst) != lost {
            (self.on_change)(failure);
        }
    }
}

/// Whose rate a limiter counts: fixed-size, so a local check allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A credential in a tenant: the tenant and the credential's digest.
    Credential(TenantId, [u8; 16]),
    /// A tenant.
    Tenant(TenantId),
}

impl Key {
    /// The key in Redis (after the deployment's prefix).
    fn shared(self) -> String {
        match self {
            Self::Credential(tenant, digest) => format!("c:{tenant}:{}", hex::encode(digest)),
            Self::Tenant(tenant) => format!("t:{tenant}"),
        }
    }

    fn scope(self) -> RateScope {
        match self {
            Self::Credential(..) => RateScope::Credential,
            Self::Tenant(_) => RateScope::Tenant,
        }
    }
}

/// A credential's digest: its issuer and id (else its subject), so the key's size is fixed
/// whatever the caller presented.
#[must_use]
pub fn credential_digest(ctx: &RequestContext) -> [u8; 16] {
    let p = &ctx.principal;
    let mut hasher = blake3::Hasher::new();
    for part in [
        p.issuer.as_deref().unwrap_or(""),
        p.credential_id.as_deref().unwrap_or(&p.subject),
    ] {
        hasher.update(&(part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let mut digest = [0; 16];
    digest.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    digest
}

/// One rate's GCRA in this process (`governor`), keyed by [`Key`]; keys whose rate has fully
/// refilled are swept every [`SWEEP_EVERY`] checks, so memory follows the active keys.
pub struct LocalGcra {
    limiter: DefaultKeyedRateLimiter<Key>,
    checks: AtomicU64,
}

impl LocalGcra {
    /// The GCRA of `rate`.
    #[must_use]
    pub fn new(rate: Rate) -> Self {
        let per_second = NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            checks: AtomicU64::new(0),
        }
    }

    /// One decision for `key`: `None` admitted (a unit of its rate used), else how long until
    /// it would be.
    pub fn check(&self, key: Key) -> Option<Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&key)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// Rate limits from each tenant's plan, per credential and per tenant.
pub struct PlanRateLimit {
    plans: Arc<PlanCache>,
    defaults: PlanRates,
    /// One local limiter per distinct rate (plans are few: at most 2 × 256 + 2 rates).
    local: RwLock<HashMap<Rate, Arc<LocalGcra>>>,
    shared: Option<Shared>,
    metrics: Metrics,
}

impl std::fmt::Debug for PlanRateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanRateLimit")
            .field("defaults", &self.defaults)
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl PlanRateLimit {
    /// Limits from `plans`, `defaults` for a plan (or a tenant on none) that sets no rate, in
    /// this process or shared through `shared`; `on_change` hears of the shared limiter's state
    /// changes.
    ///
    /// # Errors
    /// A message when the Redis URL cannot be parsed.
    pub fn new(
        plans: Arc<PlanCache>,
        defaults: PlanRates,
        shared: Option<SharedSettings>,
        metrics: Metrics,
        on_change: OnStateChange,
    ) -> Result<Self, String> {
        let shared = match shared {
            Some(s) => Some(Shared {
                client: redis::Client::open(s.url.as_str())
                    .map_err(|e| format!("usage.redis_url: {e}"))?,
                key_prefix: s.key_prefix,
                timeout: s.timeout,
                script: redis::Script::new(GCRA_SCRIPT),
                connection: std::sync::RwLock::new(None),
                connecting: tokio::sync::Mutex::new(None),
                lost: AtomicBool::new(false),
                on_change,
            }),
            None => None,
        };
        Ok(Self {
            plans,
            defaults,
            local: RwLock::new(HashMap::new()),
            shared,
            metrics,
        })
    }

    /// The local limiter of `rate`.
    fn limiter(&self, rate: Rate) -> Result<Arc<LocalGcra>, RateError> {
        let poisoned = || RateError::Unavailable("the local rate limiter is poisoned".into());
        if let Some(limiter) = self.local.read().map_err(|_| poisoned())?.get(&rate) {
            return Ok(limiter.clone());
        }
        let mut local = self.local.write().map_err(|_| poisoned())?;
        Ok(local
            .entry(rate)
            .or_insert_with(|| Arc::new(LocalGcra::new(rate)))
            .clone())
    }

    /// The local decision for `key`: `None` admitted, else how long to wait.
    fn decide_locally(&self, key: Key, rate: Rate) -> Result<Option<Duration>, RateError> {
        Ok(self.limiter(rate)?.check(key))
    }

    async fn decide(&self, key: Key, rate: Rate) -> Result<(), RateError> {
        let wait = match &self.shared {
            Some(shared) => match shared.decide(&key.shared(), rate).await {
                Ok(wait) => {
                    shared.note(None);
                    wait
                }
                Err(reason) => {
                    shared.note(Some(&reason));
                    self.metrics.fallback("rate_limit_redis");
                    self.decide_locally(key, rate)?
                }
            },
            None => self.decide_locally(key, rate)?,
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(RateError::Limited {
                scope: key.scope(),
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }),
        }
    }
}

#[async_trait]
impl RateLimit for PlanRateLimit {
    async fn admit(&self, ctx: &RequestContext) -> Result<(), RateError> {
        let plan = self
            .plans
            .plan(ctx.tenant_id)
            .await
            .map_err(RateError::Unavailable)?;
        let own = plan
            .as_deref()
            .map(|(_, plan)| plan.rates)
            .unwrap_or_default();
        if let Some(rate) = own.credential.or(self.defaults.credential) {
            let key = Key::Credential(ctx.tenant_id, credential_digest(ctx));
            self.decide(key, rate).await?;
        }
        if let Some(rate) = own.tenant.or(self.defaults.tenant) {
            self.decide(Key::Tenant(ctx.tenant_id), rate).await?;
        }
        Ok(())
    }
}
