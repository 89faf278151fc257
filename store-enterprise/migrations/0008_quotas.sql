-- Decision Gate enterprise schema, migration 8: plans, quotas and the usage ledger's time.
-- Conventions: see 0001_tenancy.sql and ADR 0008; the decisions are ADR 0016.
--
-- A plan names the features a tenant may use, its rate limits (both in `document_json`, checked
-- by the server) and its quotas (`plan_quotas`, read here, in the transaction that pays). A
-- tenant has at most one plan (none: no quotas and every feature) and may override any quota.
-- Operators manage plans and overrides with the owner's connection; the application role
-- reads them.
--
-- Quotas are checked and consumed in the transaction of the operation they pay for: usage
-- events reach the ledger through dg_record_effects, and each event counted for the first time
-- consumes from every quota on its counter. A quota's use is spread over QUOTA_SHARDS rows,
-- each with its own share ("cap") of the limit, so concurrent calls of one tenant take
-- different row locks instead of queueing on one counter. When no share has room the call
-- locks all of the period's rows in order, counts exactly, and spreads the room left again;
-- a changed limit is spread the same way on its first use. The caps always add up to the limit
-- (or to what is used, when a lowered limit is already passed), so no interleaving of calls
-- takes a total past its limit.

ALTER TABLE usage_events ADD COLUMN recorded_at timestamptz NOT NULL DEFAULT now();
-- The export reads a time window in order; the usage API a tenant's counter in a period.
CREATE INDEX usage_events_time ON usage_events (recorded_at, tenant_id, idempotency_key);
CREATE INDEX usage_events_counter ON usage_events (tenant_id, metric, recorded_at);

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
    tenant_id    bigint      NOT NULL REFERENCES tenants (tenant_id),
    metric       text        NOT NULL,
    period       text        NOT NULL,
    period_start timestamptz NOT NULL,
    shard        smallint    NOT NULL,
    used         bigint      NOT NULL DEFAULT 0 CHECK (used >= 0),
    cap          bigint      NOT NULL DEFAULT 0,
    -- The limit the caps were spread for; another limit is spread again on its first use.
    balanced_for bigint      NOT NULL DEFAULT -1,
    PRIMARY KEY (tenant_id, metric, period, period_start, shard)
);

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

-- When a period starts and ends (UTC); a total starts at the epoch and never ends.
CREATE FUNCTION dg_period_start(p_period text) RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT CASE p_period
        WHEN 'day' THEN date_trunc('day', now(), 'UTC')
        WHEN 'month' THEN date_trunc('month', now(), 'UTC')
        ELSE 'epoch'::timestamptz END;
$$;

CREATE FUNCTION dg_period_end(p_period text, p_start timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_period
        WHEN 'day' THEN ((p_start AT TIME ZONE 'UTC') + interval '1 day') AT TIME ZONE 'UTC'
        WHEN 'month' THEN ((p_start AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC'
        END;
$$;

-- Consumes `p_quantity` of a quota (the tenant's counter in one period, limited to
-- `p_limit`), or raises SQLSTATE DGQ01 with the refusal as JSON in DETAIL. Runs in the
-- caller's transaction with the tenant set.
CREATE FUNCTION dg_consume_quota(p_tenant bigint, p_metric text, p_period text, p_limit bigint,
                                 p_quantity bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    c_shards CONSTANT int := 16;
    v_start  timestamptz := dg_period_start(p_period);
    v_own    int := pg_backend_pid() % c_shards;
    v_used   bigint;
    v_room   bigint;
    v_end    timestamptz;
    v_made   bigint;
BEGIN
    -- Fast path: a share with room whose row no other transaction holds, starting with this
    -- connection's own (so concurrent connections spread over the rows).
    UPDATE quota_shards s SET used = s.used + p_quantity
     WHERE (s.tenant_id, s.metric, s.period, s.period_start, s.shard) = (
           SELECT f.tenant_id, f.metric, f.period, f.period_start, f.shard
             FROM quota_shards f
            WHERE f.tenant_id = p_tenant AND f.metric = p_metric AND f.period = p_period
              AND f.period_start = v_start AND f.balanced_for = p_limit
              AND f.used + p_quantity <= f.cap
            ORDER BY (f.shard - v_own + c_shards) % c_shards
            LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        RETURN;
    END IF;
    -- Slow path: every row of the period, locked in order; an exact count.
    INSERT INTO quota_shards (tenant_id, metric, period, period_start, shard)
    SELECT p_tenant, p_metric, p_period, v_start, g FROM generate_series(0, c_shards - 1) g
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_made = ROW_COUNT;
    IF v_made > 0 THEN
        -- A quota's first use in a period: what the ledger already holds for the period counts
        -- (a quota set mid-period, or one that had no use yet), except this call's own events,
        -- which it consumes below.
        UPDATE quota_shards q SET used = (
            SELECT greatest(0, coalesce(sum(e.quantity), 0) - p_quantity) FROM usage_events e
             WHERE e.tenant_id = p_tenant AND e.metric = p_metric AND e.recorded_at >= v_start)
         WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.period = p_period
           AND q.period_start = v_start AND q.shard = 0;
    END IF;
    SELECT sum(l.used) INTO v_used FROM (
        SELECT q.used FROM quota_shards q
         WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.period = p_period
           AND q.period_start = v_start
         ORDER BY q.shard FOR UPDATE) l;
    IF v_used + p_quantity > p_limit THEN
        v_end := dg_period_end(p_period, v_start);
        RAISE EXCEPTION USING
            ERRCODE = 'DGQ01',
            MESSAGE = format('quota exceeded: %s per %s', p_metric, p_period),
            DETAIL = json_build_object(
                'metric', p_metric, 'period', p_period, 'limit', p_limit, 'used', v_used,
                'reset_at_ms', (extract(epoch FROM v_end) * 1000)::bigint,
                'retry_after_ms', CASE WHEN v_end IS NOT NULL THEN
                    greatest(1, ceil(extract(epoch FROM v_end - clock_timestamp()) * 1000))::bigint
                END
            )::text;
    END IF;
    v_room := p_limit - v_used - p_quantity;
    UPDATE quota_shards q
       SET used = q.used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END,
           cap = q.used + CASE WHEN q.shard = v_own THEN p_quantity ELSE 0 END
                 + v_room / c_shards + CASE WHEN q.shard < v_room % c_shards THEN 1 ELSE 0 END,
           balanced_for = p_limit
     WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.period = p_period
       AND q.period_start = v_start;
    -- Earlier periods are over: their rows go (the ledger keeps the events).
    DELETE FROM quota_shards q
     WHERE q.tenant_id = p_tenant AND q.metric = p_metric AND q.period = p_period
       AND q.period_start < v_start;
END $$;

-- dg_record_effects (migration 4) now consumes quotas: each usage event counted for the first
-- time consumes its quantity from every quota on its counter, counters in name order and
-- periods in name order (one order for every transaction, so the slow path's waits never form
-- a cycle). A refusal raises DGQ01 and the caller's transaction records nothing.
CREATE OR REPLACE FUNCTION dg_record_effects(
    p_tenant bigint,
    p_usage_tenants bigint[], p_usage_keys text[], p_usage_namespaces bigint[],
    p_usage_metrics text[], p_usage_quantities bigint[],
    p_audit_tenants bigint[], p_audit_namespaces bigint[], p_audit_json text[], p_audit_sha text[]
) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_metrics    text[];
    v_quantities bigint[];
    l            record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF cardinality(p_usage_keys) > 0 THEN
        WITH counted AS (
            INSERT INTO usage_events (tenant_id, idempotency_key, namespace_id, metric, quantity)
            SELECT * FROM unnest(p_usage_tenants, p_usage_keys, p_usage_namespaces,
                                 p_usage_metrics, p_usage_quantities)
            ON CONFLICT DO NOTHING
            RETURNING metric, quantity
        ), per_metric AS (
            SELECT metric, sum(quantity)::bigint AS quantity FROM counted
             GROUP BY metric HAVING sum(quantity) > 0
        )
        SELECT array_agg(metric ORDER BY metric), array_agg(quantity ORDER BY metric)
          INTO v_metrics, v_quantities FROM per_metric;
        IF v_metrics IS NOT NULL THEN
            FOR l IN
                SELECT m.metric, m.quantity, lim.period, lim.quota_limit
                  FROM unnest(v_metrics, v_quantities) WITH ORDINALITY AS m (metric, quantity, i)
                  CROSS JOIN LATERAL dg_quota_limits(p_tenant, m.metric) lim
                 ORDER BY m.i, lim.period
            LOOP
                PERFORM dg_consume_quota(p_tenant, l.metric, l.period, l.quota_limit,
                                         l.quantity);
            END LOOP;
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

-- The quotas of a tenant with what each has used in its current period: reads only, no lock.
-- The caller's transaction has the tenant set.
CREATE FUNCTION dg_quota_state(p_tenant bigint)
RETURNS TABLE (metric text, period text, quota_limit bigint, used bigint, reset_at timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT m.metric, lim.period, lim.quota_limit,
           coalesce((SELECT sum(q.used) FROM quota_shards q
                      WHERE q.tenant_id = p_tenant AND q.metric = m.metric
                        AND q.period = lim.period
                        AND q.period_start = dg_period_start(lim.period)), 0)::bigint,
           dg_period_end(lim.period, dg_period_start(lim.period))
      FROM unnest(ARRAY['tool_calls', 'runs_started', 'evidence_queries', 'runpack_exports',
                        'schemas_written', 'storage_bytes', 'registry_entries']) AS m (metric)
      CROSS JOIN LATERAL dg_quota_limits(p_tenant, m.metric) lim
     ORDER BY m.metric, lim.period;
$$;

-- The same for the usage API, in the tenant's scope.
CREATE FUNCTION dg_quota_usage(p_tenant bigint)
RETURNS TABLE (metric text, period text, quota_limit bigint, used bigint, reset_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY SELECT * FROM dg_quota_state(p_tenant);
END $$;

-- The pre-check of a call (`UsageMeter::check`): the first quota its usage events would take
-- past its limit, as of now, as the JSON of a refusal (NULL: none). Events whose key is
-- already in the ledger consume nothing (a retried call). Reads only: concurrent calls may
-- pass it together; dg_consume_quota settles them.
CREATE FUNCTION dg_quota_check(p_tenant bigint, p_keys text[], p_metrics text[],
                               p_quantities bigint[])
RETURNS text LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r record;
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    SELECT q.metric, q.period, q.quota_limit, q.used, q.reset_at INTO r
      FROM (SELECT u.metric, sum(u.quantity)::bigint AS quantity
              FROM unnest(p_keys, p_metrics, p_quantities) AS u (k, metric, quantity)
             WHERE NOT EXISTS (SELECT 1 FROM usage_events e
                                WHERE e.tenant_id = p_tenant AND e.idempotency_key = u.k)
             GROUP BY u.metric) w
      CROSS JOIN LATERAL (
            SELECT w.metric, lim.period, lim.quota_limit,
                   coalesce((SELECT sum(s.used) FROM quota_shards s
                              WHERE s.tenant_id = p_tenant AND s.metric = w.metric
                                AND s.period = lim.period
                                AND s.period_start = dg_period_start(lim.period)), 0)::bigint
                       AS used,
                   dg_period_end(lim.period, dg_period_start(lim.period)) AS reset_at
              FROM dg_quota_limits(p_tenant, w.metric) lim) q
     WHERE w.quantity > 0 AND q.used + w.quantity > q.quota_limit
     ORDER BY q.metric, q.period
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
