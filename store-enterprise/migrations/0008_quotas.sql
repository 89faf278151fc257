-- Decision Gate enterprise schema, migration 8: plans, quotas and the usage counters.
-- Conventions: see 0001_tenancy.sql and ADR 0008; the decisions are ADR 0016.
--
-- A plan names the features a tenant may use, its rate limits (both in `document_json`, checked
-- by the server) and its quotas (`plan_quotas`, read here, in the transaction that pays). A
-- tenant has at most one plan (none: no quotas and every feature) and may override any quota.
-- Operators manage plans and overrides with the owner's connection; the application role
-- reads them.
--
-- Every usage event counted for the first time (dg_record_effects) adds its quantity to its
-- tenant's counter, in the transaction of the call that pays, and a quota on the counter is
-- checked there. A counter is spread over 16 rows ("shares"), each holding a part of the day's,
-- the month's and the total use and, for each period with a limit, its own share ("cap") of
-- the limit, so concurrent calls of one tenant update different rows instead of queueing on
-- one. A call takes the first share whose caps have room and that no other transaction holds;
-- when none has (or a period rolled over, or a limit changed) it locks all 16 in order, counts
-- exactly, refuses or consumes, and spreads the room left over the shares again. The caps of a
-- limited period add up to its limit (or to its use, when a lowered limit is already passed),
-- so no interleaving of calls takes a total past its limit.

ALTER TABLE usage_events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
-- The export reads time windows; rows arrive in time order, so a block-range index is enough
-- and costs an insert almost nothing.
CREATE INDEX usage_events_time ON usage_events USING brin (recorded_at);

CREATE TABLE plans (
    plan_id       text COLLATE "C" PRIMARY KEY
                  CHECK (plan_id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    document_json text        NOT NULL,
    doc_sha256    text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plan_quotas (
    plan_id     text COLLATE "C" NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
    metric      text   NOT NULL CHECK (metric IN ('tool_calls', 'runs_started',
                    'evidence_queries', 'runpack_exports', 'schemas_written', 'storage_bytes',
                    'registry_entries')),
    period      text   NOT NULL CHECK (period IN ('day', 'month', 'total')),
    quota_limit bigint NOT NULL CHECK (quota_limit >= 0),
    PRIMARY KEY (plan_id, metric, period)
);

ALTER TABLE tenants ADD COLUMN plan_id text COLLATE "C" REFERENCES plans (plan_id);

-- A tenant's own limit for a counter and period, replacing its plan's; NULL lifts it.
CREATE TABLE quota_overrides (
    tenant_id   bigint NOT NULL REFERENCES tenants (tenant_id),
    metric      text   NOT NULL CHECK (metric IN ('tool_calls', 'runs_started',
                    'evidence_queries', 'runpack_exports', 'schemas_written', 'storage_bytes',
                    'registry_entries')),
    period      text   NOT NULL CHECK (period IN ('day', 'month', 'total')),
    quota_limit bigint CHECK (quota_limit >= 0),
    PRIMARY KEY (tenant_id, metric, period)
);

CREATE TABLE quota_shards (
    tenant_id   bigint      NOT NULL REFERENCES tenants (tenant_id),
    metric      text        NOT NULL,
    shard       smallint    NOT NULL,
    -- Per period: its start, this share's use, and this share's cap with the limit the caps
    -- were spread for (-2: no limit; -1: not spread yet).
    day_start   timestamptz NOT NULL,
    day_used    bigint      NOT NULL DEFAULT 0,
    day_cap     bigint      NOT NULL DEFAULT 0,
    day_for     bigint      NOT NULL DEFAULT -1,
    month_start timestamptz NOT NULL,
    month_used  bigint      NOT NULL DEFAULT 0,
    month_cap   bigint      NOT NULL DEFAULT 0,
    month_for   bigint      NOT NULL DEFAULT -1,
    total_used  bigint      NOT NULL DEFAULT 0,
    total_cap   bigint      NOT NULL DEFAULT 0,
    total_for   bigint      NOT NULL DEFAULT -1,
    -- The limits epoch the caps were spread under (see quota_epoch).
    spread_epoch bigint     NOT NULL DEFAULT -1,
    PRIMARY KEY (tenant_id, metric, shard)
) WITH (fillfactor = 50); -- room on each page, so every update stays on its page (HOT)

-- Bumped by every change of plans, assignments and overrides (by the owner, in the change's
-- transaction): shares spread under an older epoch are spread again, with the limits read
-- afresh, on their counter's next call. Calls read this one row instead of the limits.
CREATE TABLE quota_epoch (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    epoch    bigint  NOT NULL
);
INSERT INTO quota_epoch (epoch) VALUES (0);

-- The counters of what the ledger held before this migration.
INSERT INTO quota_shards (tenant_id, metric, shard, day_start, day_used, month_start,
                          month_used, total_used)
SELECT tenant_id, metric, g,
       date_trunc('day', now(), 'UTC'), CASE WHEN g = 0 THEN day ELSE 0 END,
       date_trunc('month', now(), 'UTC'), CASE WHEN g = 0 THEN month ELSE 0 END,
       CASE WHEN g = 0 THEN total ELSE 0 END
  FROM (SELECT tenant_id, metric,
               coalesce(sum(quantity) FILTER (WHERE recorded_at >= date_trunc('day', now(), 'UTC')), 0) AS day,
               coalesce(sum(quantity) FILTER (WHERE recorded_at >= date_trunc('month', now(), 'UTC')), 0) AS month,
               sum(quantity) AS total
          FROM usage_events GROUP BY tenant_id, metric) c
  CROSS JOIN generate_series(0, 15) g;

SELECT dg_isolate_tenant_table('quota_overrides');
SELECT dg_isolate_tenant_table('quota_shards');

-- The limits on a tenant's counter: its override where it has one, else its plan's. Rows with
-- a NULL limit (an override lifting a plan's quota) are left out.
CREATE FUNCTION dg_quota_limits(p_tenant bigint, p_metric text)
RETURNS TABLE (period text, quota_limit bigint) LANGUAGE sql STABLE AS $$
    SELECT coalesce(o.period, q.period),
           CASE WHEN o.period IS NOT NULL THEN o.quota_limit ELSE q.quota_limit END
      FROM (SELECT pq.period, pq.quota_limit
              FROM tenants t JOIN plan_quotas pq ON pq.plan_id = t.plan_id
             WHERE t.tenant_id = p_tenant AND pq.metric = p_metric) q
      FULL JOIN (SELECT ov.period, ov.quota_limit FROM quota_overrides ov
                  WHERE ov.tenant_id = p_tenant AND ov.metric = p_metric) o
        ON o.period = q.period
     WHERE CASE WHEN o.period IS NOT NULL THEN o.quota_limit ELSE q.quota_limit END IS NOT NULL;
$$;

-- Adds `p_quantity` to a tenant's counter, or raises SQLSTATE DGQ01 with the refusal as JSON
-- in DETAIL when a limit of one of its periods would be passed. Runs in the caller's
-- transaction with the tenant set.
CREATE FUNCTION dg_count(p_tenant bigint, p_metric text, p_quantity bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c_shards CONSTANT int := 16;
    v_day    timestamptz := date_trunc('day', now(), 'UTC');
    v_month  timestamptz := date_trunc('month', now(), 'UTC');
    v_own    int := pg_backend_pid() % c_shards;
    v_epoch  bigint := (SELECT e.epoch FROM quota_epoch e);
    l_day    bigint;
    l_month  bigint;
    l_total  bigint;
    v        record;
    v_period text;
    v_limit  bigint;
    v_used   bigint;
    v_end    timestamptz;
BEGIN
    -- Fast path: a share spread under the current limits, in the current periods, whose caps
    -- have room and that no other transaction holds, starting with this connection's own.
    UPDATE quota_shards s
       SET day_used = s.day_used + p_quantity, month_used = s.month_used + p_quantity,
           total_used = s.total_used + p_quantity
     WHERE (s.tenant_id, s.metric, s.shard) = (
           SELECT f.tenant_id, f.metric, f.shard FROM quota_shards f
            WHERE f.tenant_id = p_tenant AND f.metric = p_metric
              AND f.spread_epoch = v_epoch
              AND f.day_start = v_day AND f.month_start = v_month
              AND (f.day_for = -2 OR f.day_used + p_quantity <= f.day_cap)
              AND (f.month_for = -2 OR f.month_used + p_quantity <= f.month_cap)
              AND (f.total_for = -2 OR f.total_used + p_quantity <= f.total_cap)
            ORDER BY (f.shard - v_own + c_shards) % c_shards
            LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        RETURN;
    END IF;
    -- Slow path: every share, locked in order; the periods rolled over; an exact count.
    INSERT INTO quota_shards (tenant_id, metric, shard, day_start, month_start)
    SELECT p_tenant, p_metric, g, v_day, v_month FROM generate_series(0, c_shards - 1) g
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM quota_shards q WHERE q.tenant_id = p_tenant AND q.metric = p_metric
      ORDER BY q.shard FOR UPDATE;
    UPDATE quota_shards q SET day_start = v_day, day_used = 0, day_for = -1
     WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.day_start <> v_day;
    UPDATE quota_shards q SET month_start = v_month, month_used = 0, month_for = -1
     WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.month_start <> v_month;
    -- The counter's limits and their epoch, read now that the shares are held.
    v_epoch := (SELECT e.epoch FROM quota_epoch e);
    SELECT max(x.quota_limit) FILTER (WHERE x.period = 'day'),
           max(x.quota_limit) FILTER (WHERE x.period = 'month'),
           max(x.quota_limit) FILTER (WHERE x.period = 'total')
      INTO l_day, l_month, l_total
      FROM dg_quota_limits(p_tenant, p_metric) x;
    SELECT sum(q.day_used)::bigint AS d, sum(q.month_used)::bigint AS m,
           sum(q.total_used)::bigint AS t INTO v
      FROM quota_shards q WHERE q.tenant_id = p_tenant AND q.metric = p_metric;
    FOREACH v_period IN ARRAY ARRAY['day', 'month', 'total'] LOOP
        v_limit := CASE v_period WHEN 'day' THEN l_day WHEN 'month' THEN l_month
                                 ELSE l_total END;
        v_used := CASE v_period WHEN 'day' THEN v.d WHEN 'month' THEN v.m ELSE v.t END;
        IF v_limit IS NOT NULL AND v_used + p_quantity > v_limit THEN
            v_end := CASE v_period WHEN 'day' THEN v_day + interval '1 day'
                                   WHEN 'month' THEN
                                       ((v_month AT TIME ZONE 'UTC') + interval '1 month')
                                       AT TIME ZONE 'UTC' END;
            RAISE EXCEPTION USING
                ERRCODE = 'DGQ01',
                MESSAGE = format('quota exceeded: %s per %s', p_metric, v_period),
                DETAIL = json_build_object(
                    'metric', p_metric, 'period', v_period, 'limit', v_limit, 'used', v_used,
                    'reset_at_ms', (extract(epoch FROM v_end) * 1000)::bigint,
                    'retry_after_ms', CASE WHEN v_end IS NOT NULL THEN
                        greatest(1, ceil(extract(epoch FROM v_end - clock_timestamp()) * 1000))::bigint
                    END)::text;
        END IF;
    END LOOP;
    -- Consume on this connection's share and spread each limited period's room again.
    UPDATE quota_shards q
       SET day_used = q.day_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END,
           month_used = q.month_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END,
           total_used = q.total_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END,
           day_cap = q.day_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END
                     + dg_share(l_day - v.d - p_quantity, q.shard, c_shards),
           day_for = coalesce(l_day, -2),
           month_cap = q.month_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END
                     + dg_share(l_month - v.m - p_quantity, q.shard, c_shards),
           month_for = coalesce(l_month, -2),
           total_cap = q.total_used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END
                     + dg_share(l_total - v.t - p_quantity, q.shard, c_shards),
           total_for = coalesce(l_total, -2),
           spread_epoch = v_epoch
     WHERE q.tenant_id = p_tenant AND q.metric = p_metric;
END $$;

-- Share `p_shard` of `p_room` spread over `p_shards` shares (0 without a limit).
CREATE FUNCTION dg_share(p_room bigint, p_shard int, p_shards int) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_room IS NULL THEN 0
                ELSE p_room / p_shards + CASE WHEN p_shard < p_room % p_shards THEN 1 ELSE 0 END
           END;
$$;

-- dg_record_effects (migration 4) now counts: each usage event counted for the first time adds
-- its quantity to its tenant's counter and checks the counter's quotas, counters in name
-- order (one lock order for every transaction, so the slow path's waits never form a cycle).
-- A refusal raises DGQ01 and the caller's transaction records nothing.
CREATE OR REPLACE FUNCTION dg_record_effects(
    p_tenant bigint,
    p_usage_tenants bigint[], p_usage_keys text[], p_usage_namespaces bigint[],
    p_usage_metrics text[], p_usage_quantities bigint[],
    p_audit_tenants bigint[], p_audit_namespaces bigint[], p_audit_json text[], p_audit_sha text[]
) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c        record;
    v_metric text;
    v_sum    bigint := 0;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF cardinality(p_usage_keys) > 0 THEN
        -- The events come sorted by counter (the store sorts them), so each counter's new
        -- events are counted together, counters in name order.
        FOR c IN
            INSERT INTO usage_events (tenant_id, idempotency_key, namespace_id, metric, quantity)
            SELECT * FROM unnest(p_usage_tenants, p_usage_keys, p_usage_namespaces,
                                 p_usage_metrics, p_usage_quantities)
            ON CONFLICT DO NOTHING
            RETURNING metric, quantity
        LOOP
            IF c.metric IS DISTINCT FROM v_metric THEN
                IF v_sum > 0 THEN
                    PERFORM dg_count(p_tenant, v_metric, v_sum);
                END IF;
                v_metric := c.metric;
                v_sum := 0;
            END IF;
            v_sum := v_sum + c.quantity;
        END LOOP;
        IF v_sum > 0 THEN
            PERFORM dg_count(p_tenant, v_metric, v_sum);
        END IF;
    END IF;
    IF cardinality(p_audit_json) > 0 THEN
        WITH e AS (
            SELECT t, ns, j, s,
                   EXISTS (SELECT 1 FROM namespaces n
                            WHERE n.tenant_id = t AND n.namespace_id = ns) AS known
              FROM unnest(p_audit_tenants, p_audit_namespaces, p_audit_json, p_audit_sha)
                   AS u (t, ns, j, s)
        ), tenant_rows AS (
            INSERT INTO audit_events (tenant_id, namespace_id, event_json, doc_sha256)
            SELECT t, ns, j, s FROM e WHERE known
        )
        INSERT INTO deployment_audit_events (named_tenant, named_namespace, event_json, doc_sha256)
        SELECT t, ns, j, s FROM e WHERE NOT known;
    END IF;
END $$;

-- A tenant's counters in their current periods (a period that has rolled over counts 0), with
-- each limit: reads only, no lock. The caller's transaction has the tenant set.
CREATE FUNCTION dg_counters(p_tenant bigint)
RETURNS TABLE (metric text, period text, used bigint, quota_limit bigint, reset_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH c AS (
        SELECT q.metric,
               coalesce(sum(q.day_used) FILTER (
                   WHERE q.day_start = date_trunc('day', now(), 'UTC')), 0)::bigint AS d,
               coalesce(sum(q.month_used) FILTER (
                   WHERE q.month_start = date_trunc('month', now(), 'UTC')), 0)::bigint AS m,
               sum(q.total_used)::bigint AS t
          FROM quota_shards q WHERE q.tenant_id = p_tenant GROUP BY q.metric
    ), periods AS (
        SELECT m.metric, p.period,
               CASE p.period WHEN 'day' THEN c.d WHEN 'month' THEN c.m ELSE c.t END AS used,
               CASE p.period
                   WHEN 'day' THEN date_trunc('day', now(), 'UTC') + interval '1 day'
                   WHEN 'month' THEN ((date_trunc('month', now(), 'UTC') AT TIME ZONE 'UTC')
                                      + interval '1 month') AT TIME ZONE 'UTC'
               END AS reset_at
          FROM unnest(ARRAY['evidence_queries', 'registry_entries', 'runpack_exports',
                            'runs_started', 'schemas_written', 'storage_bytes',
                            'tool_calls']) AS m (metric)
          CROSS JOIN unnest(ARRAY['day', 'month', 'total']) AS p (period)
          LEFT JOIN c ON c.metric = m.metric
    )
    SELECT p.metric, p.period, coalesce(p.used, 0), lim.quota_limit, p.reset_at
      FROM periods p
      LEFT JOIN LATERAL (SELECT l.quota_limit FROM dg_quota_limits(p_tenant, p.metric) l
                          WHERE l.period = p.period) lim ON true
     ORDER BY p.metric, p.period;
$$;

-- The same for the usage API, in the tenant's scope.
CREATE FUNCTION dg_usage(p_tenant bigint)
RETURNS TABLE (metric text, period text, used bigint, quota_limit bigint, reset_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY SELECT * FROM dg_counters(p_tenant);
END $$;

-- The pre-check of a call (`UsageMeter::check`): the first quota its usage events would take
-- past its limit, as of now, as the JSON of a refusal (NULL: none). Events whose key is
-- already in the ledger count nothing (a retried call). Reads only: concurrent calls may pass
-- it together; dg_count settles them.
CREATE FUNCTION dg_quota_check(p_tenant bigint, p_keys text[], p_metrics text[],
                               p_quantities bigint[])
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    SELECT c.metric, c.period, c.quota_limit, c.used, c.reset_at INTO r
      FROM (SELECT u.metric, sum(u.quantity)::bigint AS quantity
              FROM unnest(p_keys, p_metrics, p_quantities) AS u (k, metric, quantity)
             WHERE NOT EXISTS (SELECT 1 FROM usage_events e
                                WHERE e.tenant_id = p_tenant AND e.idempotency_key = u.k)
             GROUP BY u.metric) w
      JOIN dg_counters(p_tenant) c ON c.metric = w.metric
     WHERE w.quantity > 0 AND c.quota_limit IS NOT NULL AND c.used + w.quantity > c.quota_limit
     ORDER BY c.metric, c.period
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN json_build_object(
        'metric', r.metric, 'period', r.period, 'limit', r.quota_limit, 'used', r.used,
        'reset_at_ms', (extract(epoch FROM r.reset_at) * 1000)::bigint,
        'retry_after_ms', CASE WHEN r.reset_at IS NOT NULL THEN
            greatest(1, ceil(extract(epoch FROM r.reset_at - clock_timestamp()) * 1000))::bigint
        END)::text;
END $$;
