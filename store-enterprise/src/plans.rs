//! Plans, quota overrides and usage at rest (migration 8, ADR 0016).
//!
//! A [`Plan`] names the features its tenants may use, their rate limits and their quotas. The
//! operator manages plans, assigns them to tenants and overrides single quotas with the
//! owner's connection ([`put_plan`], [`assign_plan`], [`set_override`]); every change is
//! announced on [`CHANGES_CHANNEL`](crate::CHANGES_CHANNEL) in its transaction, so every
//! replica drops what it cached of plans. Quotas themselves are read where they are consumed,
//! in the transaction of the call that pays, so a changed quota holds from the next call on.
//!
//! Usage is read from the counters kept beside the ledger ([`tenant_usage`]) and from the
//! ledger itself ([`export_usage`]).

use std::collections::{BTreeMap, BTreeSet};

use decision_gate_core::access::{QuotaPeriod, UsageMetric};
use decision_gate_core::ids::TenantId;
use decision_gate_core::store::codec::encode;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::error::PgError;
use crate::tenancy::{announce, begin_for};

/// Announces a change of limits in `executor`'s transaction: every replica forgets what it
/// cached of plans, and every counter's shares are spread again under the new limits on the
/// counter's next call (migration 8, `quota_epoch`).
async fn limits_changed(tx: &mut sqlx::PgConnection) -> Result<(), PgError> {
    sqlx::query("UPDATE quota_epoch SET epoch = epoch + 1")
        .execute(&mut *tx)
        .await?;
    announce(&mut *tx).await
}

/// Most plans a deployment holds.
pub const MAX_PLANS: usize = 256;
/// Longest plan id, in bytes.
pub const MAX_PLAN_ID: usize = 63;
/// Largest sustained rate or burst of a plan's rate limit.
pub const MAX_RATE: u32 = 1_000_000;

/// A switchable feature of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// The gRPC API.
    Grpc,
    /// Runpack export to object storage.
    S3Export,
    /// Trust-hardening mode.
    TrustHardening,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Self; 3] = [Self::Grpc, Self::S3Export, Self::TrustHardening];

    /// The feature's name in plans and refusals.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grpc => "grpc",
            Self::S3Export => "s3_export",
            Self::TrustHardening => "trust_hardening",
        }
    }
}

/// A sustained rate with a burst (GCRA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Calls per second, sustained: 1 to [`MAX_RATE`].
    pub per_second: u32,
    /// Calls at once: 1 to [`MAX_RATE`].
    pub burst: u32,
}

/// A plan's rate limits; a scope left out is not limited by the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRates {
    /// Each credential's rate.
    #[serde(default)]
    pub credential: Option<Rate>,
    /// The rate of all the tenant's callers together.
    #[serde(default)]
    pub tenant: Option<Rate>,
}

/// One quota: a counter's limit over a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimit {
    /// The counter.
    pub metric: UsageMetric,
    /// The period.
    pub period: QuotaPeriod,
    /// The largest total the period accepts, 0 to `i64::MAX`.
    pub limit: u64,
}

/// A plan: features, rate limits and quotas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The features the plan includes; the rest answer `permission_denied`.
    #[serde(default)]
    pub features: BTreeSet<Feature>,
    /// Rate limits.
    #[serde(default)]
    pub rates: PlanRates,
    /// Quotas, at most one per counter and period.
    #[serde(default)]
    pub quotas: Vec<QuotaLimit>,
}

impl Plan {
    /// Checks the plan: rates in range, one quota per counter and period (so at most 21),
    /// limits storable.
    ///
    /// # Errors
    /// [`PgError::Invalid`] naming the field and the rule.
    pub fn check(&self) -> Result<(), PgError> {
        for (field, rate) in [
            ("rates.credential", self.rates.credential),
            ("rates.tenant", self.rates.tenant),
        ] {
            let in_range = |v: u32| (1..=MAX_RATE).contains(&v);
            if let Some(r) = rate
                && !(in_range(r.per_second) && in_range(r.burst))
            {
                return Err(PgError::Invalid {
                    field,
                    message: format!(
                        "per_second and burst must be between 1 and {MAX_RATE}, got {} and {}",
                        r.per_second, r.burst
                    ),
                });
            }
        }
        let mut seen = BTreeSet::new();
        for q in &self.quotas {
            if !seen.insert((q.metric, q.period)) {
                return Err(PgError::Invalid {
                    field: "quotas",
                    message: format!(
                        "{} per {} is limited twice",
                        q.metric.as_str(),
                        q.period.as_str()
                    ),
                });
            }
            if i64::try_from(q.limit).is_err() {
                return Err(PgError::Invalid {
                    field: "quotas.limit",
                    message: format!("{} is above the largest limit {}", q.limit, i64::MAX),
                });
            }
        }
        Ok(())
    }

    /// Whether the plan includes `feature`.
    #[must_use]
    pub fn includes(&self, feature: Feature) -> bool {
        self.features.contains(&feature)
    }
}

/// Checks a plan id: 1 to 63 bytes of `a-z`, `0-9`, `_` and `-`, starting with a letter or
/// digit.
///
/// # Errors
/// [`PgError::Invalid`] naming the rule.
pub fn check_plan_id(id: &str) -> Result<(), PgError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_PLAN_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !id.starts_with(['_', '-']);
    if ok {
        Ok(())
    } else {
        Err(PgError::Invalid {
            field: "plan",
            message: format!(
                "{id:?} must be 1 to {MAX_PLAN_ID} bytes of a-z, 0-9, _ and -, starting with a \
                 letter or digit"
            ),
        })
    }
}

/// Creates or replaces plan `id` (owner's connection); tenants on it get its new quotas from
/// their next call on.
///
/// # Errors
/// [`PgError::Invalid`] for a bad id or plan, [`PgError::Conflict`] when the deployment holds
/// [`MAX_PLANS`] already, [`PgError::Unavailable`] otherwise.
pub async fn put_plan(owner: &PgPool, id: &str, plan: &Plan) -> Result<(), PgError> {
    check_plan_id(id)?;
    plan.check()?;
    let (json, sha) = encode(plan).map_err(|e| PgError::Invalid {
        field: "plan",
        message: e.to_string(),
    })?;
    let mut tx = owner.begin().await?;
    // Plans are few and changed rarely: one lock serialises their changes, so the count below
    // cannot be raced past.
    sqlx::query("LOCK TABLE plans IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (count, exists): (i64, bool) =
        sqlx::query_as("SELECT count(*), coalesce(bool_or(plan_id = $1), false) FROM plans")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
    if !exists && usize::try_from(count).unwrap_or(usize::MAX) >= MAX_PLANS {
        return Err(PgError::Conflict {
            what: "plan",
            id: format!("{id} (the deployment holds {MAX_PLANS} plans, the most it may)"),
        });
    }
    sqlx::query(
        "INSERT INTO plans (plan_id, document_json, doc_sha256) VALUES ($1, $2, $3)
         ON CONFLICT (plan_id) DO UPDATE
            SET document_json = excluded.document_json, doc_sha256 = excluded.doc_sha256,
                updated_at = now()",
    )
    .bind(id)
    .bind(&json)
    .bind(&sha)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM plan_quotas WHERE plan_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let (metrics, periods, limits) = quota_columns(&plan.quotas);
    sqlx::query(
        "INSERT INTO plan_quotas (plan_id, metric, period, quota_limit)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[])",
    )
    .bind(id)
    .bind(metrics)
    .bind(periods)
    .bind(limits)
    .execute(&mut *tx)
    .await?;
    limits_changed(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

fn quota_columns(quotas: &[QuotaLimit]) -> (Vec<&'static str>, Vec<&'static str>, Vec<i64>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for q in quotas {
        columns.0.push(q.metric.as_str());
        columns.1.push(q.period.as_str());
        // Checked by `Plan::check`.
        columns.2.push(i64::try_from(q.limit).unwrap_or(i64::MAX));
    }
    columns
}

/// Deletes plan `id` (owner's connection).
///
/// # Errors
/// [`PgError::MissingParent`] when there is no such plan, [`PgError::Conflict`] while a
/// tenant is on it, [`PgError::Unavailable`] otherwise.
pub async fn delete_plan(owner: &PgPool, id: &str) -> Result<(), PgError> {
    let mut tx = owner.begin().await?;
    let deleted = sqlx::query("DELETE FROM plans WHERE plan_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                PgError::Conflict {
                    what: "plan",
                    id: format!("{id} (tenants are on it; assign them another plan first)"),
                }
            }
            _ => PgError::from(e),
        })?;
    if deleted.rows_affected() == 0 {
        return Err(PgError::MissingParent {
            what: "plan",
            id: id.to_owned(),
        });
    }
    announce(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Every plan, by id (at most [`MAX_PLANS`]).
///
/// # Errors
/// [`PgError::Unavailable`]; [`PgError::Invalid`] for a stored plan this binary cannot read.
pub async fn list_plans(pool: &PgPool) -> Result<BTreeMap<String, Plan>, PgError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT plan_id, document_json FROM plans ORDER BY plan_id LIMIT $1")
            .bind(i64::try_from(MAX_PLANS).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(id, json)| Ok((id, read_plan(&json)?)))
        .collect()
}

fn read_plan(json: &str) -> Result<Plan, PgError> {
    serde_json::from_str(json).map_err(|e| PgError::Invalid {
        field: "plan",
        message: format!("a stored plan is unreadable: {e}"),
    })
}

/// A tenant's plan: its id and the plan, or `None` for a tenant on no plan (no quotas, no plan
/// rate limits, every feature).
///
/// # Errors
/// [`PgError::MissingParent`] when the tenant does not exist, [`PgError::Unavailable`].
pub async fn tenant_plan(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Option<(String, Plan)>, PgError> {
    let mut tx = begin_for(pool, tenant).await?;
    let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT t.plan_id, p.document_json FROM tenants t
           LEFT JOIN plans p ON p.plan_id = t.plan_id
          WHERE t.tenant_id = $1",
    )
    .bind(tenant.as_i64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match row {
        None => Err(PgError::MissingParent {
            what: "tenant",
            id: tenant.to_string(),
        }),
        Some((Some(id), Some(json))) => Ok(Some((id, read_plan(&json)?))),
        Some(_) => Ok(None),
    }
}

/// Puts `tenant` on plan `plan` (`None`: on no plan), from its next call on (owner's
/// connection).
///
/// # Errors
/// [`PgError::MissingParent`] when the tenant or the plan does not exist,
/// [`PgError::Unavailable`].
pub async fn assign_plan(
    owner: &PgPool,
    tenant: TenantId,
    plan: Option<&str>,
) -> Result<(), PgError> {
    let mut tx = begin_for(owner, tenant).await?;
    let updated = sqlx::query("UPDATE tenants SET plan_id = $2 WHERE tenant_id = $1")
        .bind(tenant.as_i64())
        .bind(plan)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                PgError::MissingParent {
                    what: "plan",
                    id: plan.unwrap_or_default().to_owned(),
                }
            }
            _ => PgError::from(e),
        })?;
    if updated.rows_affected() == 0 {
        return Err(PgError::MissingParent {
            what: "tenant",
            id: tenant.to_string(),
        });
    }
    limits_changed(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// What an override does to one of a tenant's quotas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Override {
    /// This limit instead of the plan's.
    Limit(u64),
    /// No limit, whatever the plan says.
    Unlimited,
    /// The plan's limit again.
    Clear,
}

/// Overrides `tenant`'s quota on `metric` per `period` (owner's connection).
///
/// # Errors
/// [`PgError::Invalid`] for a limit above `i64::MAX`, [`PgError::MissingParent`] when the
/// tenant does not exist, [`PgError::Unavailable`].
pub async fn set_override(
    owner: &PgPool,
    tenant: TenantId,
    metric: UsageMetric,
    period: QuotaPeriod,
    change: Override,
) -> Result<(), PgError> {
    let limit = match change {
        Override::Limit(l) => Some(i64::try_from(l).map_err(|_| PgError::Invalid {
            field: "limit",
            message: format!("{l} is above the largest limit {}", i64::MAX),
        })?),
        Override::Unlimited | Override::Clear => None,
    };
    let mut tx = begin_for(owner, tenant).await?;
    let query = if change == Override::Clear {
        "DELETE FROM quota_overrides WHERE tenant_id = $1 AND metric = $2 AND period = $3"
    } else {
        "INSERT INTO quota_overrides (tenant_id, metric, period, quota_limit)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, metric, period) DO UPDATE SET quota_limit = excluded.quota_limit"
    };
    sqlx::query(query)
        .bind(tenant.as_i64())
        .bind(metric.as_str())
        .bind(period.as_str())
        .bind(limit)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                PgError::MissingParent {
                    what: "tenant",
                    id: tenant.to_string(),
                }
            }
            _ => PgError::from(e),
        })?;
    limits_changed(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// One of a tenant's counters in one period: what the current period has used, its limit if
/// it has one, and when the period resets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// The counter.
    pub metric: UsageMetric,
    /// The period.
    pub period: QuotaPeriod,
    /// What the current period has used.
    pub used: u64,
    /// The limit (the tenant's override, else its plan's); `None` without one.
    pub limit: Option<u64>,
    /// When the period ends (unix milliseconds); `None` for a total.
    pub reset_at_ms: Option<u64>,
}

/// Every counter of `tenant` in every period (7 × 3 rows, in counter and period order), read
/// from the counters' shares: the cost does not grow with the ledger.
///
/// # Errors
/// [`PgError::Unavailable`]; [`PgError::Invalid`] for a row this binary cannot read.
pub async fn tenant_usage(pool: &PgPool, tenant: TenantId) -> Result<Vec<CounterState>, PgError> {
    /// (metric, period, used, limit, reset at in unix ms).
    type Row = (String, String, i64, Option<i64>, Option<i64>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT metric, period, used, quota_limit, (extract(epoch FROM reset_at) * 1000)::bigint
           FROM dg_usage($1)",
    )
    .bind(tenant.as_i64())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(metric, period, used, limit, reset)| {
            Ok(CounterState {
                metric: parse_metric(&metric)?,
                period: parse_period(&period)?,
                used: used.unsigned_abs(),
                limit: limit.map(i64::unsigned_abs),
                reset_at_ms: reset.map(i64::unsigned_abs),
            })
        })
        .collect()
}

fn parse_metric(name: &str) -> Result<UsageMetric, PgError> {
    UsageMetric::parse(name).ok_or_else(|| PgError::Invalid {
        field: "metric",
        message: format!("unknown counter {name:?} in the database"),
    })
}

fn parse_period(name: &str) -> Result<QuotaPeriod, PgError> {
    QuotaPeriod::ALL
        .into_iter()
        .find(|p| p.as_str() == name)
        .ok_or_else(|| PgError::Invalid {
            field: "period",
            message: format!("unknown period {name:?} in the database"),
        })
}

/// One ledger event as exported: a JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedEvent {
    /// When it was recorded (RFC 3339, UTC, microseconds).
    pub recorded_at: String,
    /// The tenant billed.
    pub tenant_id: i64,
    /// The namespace.
    pub namespace_id: i64,
    /// The counter.
    pub metric: String,
    /// How much.
    pub quantity: i64,
    /// The idempotency key that made it count once.
    pub idempotency_key: String,
}

/// Rows read per round trip by [`export_usage`].
const EXPORT_BATCH: i64 = 10_000;

/// Streams the ledger's events recorded in `[from_ms, to_ms)` (unix milliseconds), every
/// tenant's or one tenant's, in one fixed order (time, tenant, key), to `sink` in batches:
/// the same window gives the same events in the same order (owner's connection, which must
/// bypass row-level security).
///
/// # Errors
/// [`PgError::Unavailable`], or the sink's error as [`PgError::Invalid`].
pub async fn export_usage(
    owner: &PgPool,
    from_ms: i64,
    to_ms: i64,
    tenant: Option<TenantId>,
    mut sink: impl FnMut(&[ExportedEvent]) -> Result<(), String>,
) -> Result<u64, PgError> {
    let mut after: Option<(String, i64, String)> = None;
    let mut count = 0;
    loop {
        let rows: Vec<(String, i64, i64, String, i64, String)> = sqlx::query_as(
            "SELECT to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    tenant_id, namespace_id, metric, quantity, idempotency_key
               FROM usage_events
              WHERE recorded_at >= 'epoch'::timestamptz + $1 * interval '1 millisecond'
                AND recorded_at < 'epoch'::timestamptz + $2 * interval '1 millisecond'
                AND ($3::bigint IS NULL OR tenant_id = $3)
                AND ($4::text IS NULL OR (recorded_at, tenant_id, idempotency_key) >
                     ($4::timestamptz, $5::bigint, $6::text))
              ORDER BY recorded_at, tenant_id, idempotency_key
              LIMIT $7",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(tenant.map(TenantId::as_i64))
        .bind(after.as_ref().map(|a| a.0.clone()))
        .bind(after.as_ref().map(|a| a.1))
        .bind(after.as_ref().map(|a| a.2.clone()))
        .bind(EXPORT_BATCH)
        .fetch_all(owner)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(count);
        };
        after = Some((last.0.clone(), last.1, last.5.clone()));
        let batch: Vec<ExportedEvent> = rows
            .into_iter()
            .map(
                |(recorded_at, tenant_id, namespace_id, metric, quantity, idempotency_key)| {
                    ExportedEvent {
                        recorded_at,
                        tenant_id,
                        namespace_id,
                        metric,
                        quantity,
                        idempotency_key,
                    }
                },
            )
            .collect();
        count += u64::try_from(batch.len()).unwrap_or(u64::MAX);
        sink(&batch).map_err(|message| PgError::Invalid {
            field: "output",
            message,
        })?;
    }
}
