-- Decision Gate enterprise schema, migration 4: one trail. Conventions: see 0001_tenancy.sql
-- and ADR 0008.
--
-- Every audit and usage event of the enterprise server is written here, whatever wrote it: a
-- store write commits its effects in its own transaction, and the events of calls that write
-- nothing (reads, failures, refusals) are recorded by the Postgres audit sink and usage meter.
-- All of them go through one function, dg_record_effects, so the rules live once.
--
-- Events that belong to no tenant yet (an authentication failure, a call naming a tenant or
-- namespace that does not exist) go to the deployment-level stream, which the application role
-- may append to but not read: operators read it as the owner.

CREATE TABLE deployment_audit_events (
    event_id     bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- The tenant and namespace an event named, when it named one that does not exist.
    named_tenant    bigint,
    named_namespace bigint,
    event_json   text        NOT NULL,
    doc_sha256   text        NOT NULL
);

-- Records usage and audit events in the caller's transaction, with `p_tenant` as the
-- transaction's tenant (row-level security binds every row to it). A usage idempotency key
-- already recorded for the tenant counts once. An audit event whose tenant and namespace exist
-- goes to the tenant's trail, any other to the deployment stream (with the ids it named), so a
-- refusal is recorded even when what it named does not exist. Usage of a namespace that does
-- not exist is refused by the foreign key: no call that reaches the meter can name one.
CREATE FUNCTION dg_record_effects(
    p_tenant bigint,
    p_usage_tenants bigint[], p_usage_keys text[], p_usage_namespaces bigint[],
    p_usage_metrics text[], p_usage_quantities bigint[],
    p_audit_tenants bigint[], p_audit_namespaces bigint[], p_audit_json text[], p_audit_sha text[]
) RETURNS void LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    IF cardinality(p_usage_keys) > 0 THEN
        INSERT INTO usage_events (tenant_id, idempotency_key, namespace_id, metric, quantity)
        SELECT * FROM unnest(p_usage_tenants, p_usage_keys, p_usage_namespaces, p_usage_metrics,
                             p_usage_quantities)
        ON CONFLICT DO NOTHING;
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

-- Deployment-level events (no tenant): the same table, one row each.
CREATE FUNCTION dg_record_deployment_events(p_json text[], p_sha text[])
RETURNS void LANGUAGE sql VOLATILE AS $$
    INSERT INTO deployment_audit_events (event_json, doc_sha256)
    SELECT * FROM unnest(p_json, p_sha);
$$;

-- dg_append (migration 3) now records its effects through dg_record_effects; its signature and
-- answers are unchanged.
CREATE OR REPLACE FUNCTION dg_append(
    p_tenant bigint, p_namespace bigint, p_run text, p_expected bigint, p_revision bigint,
    p_head_json text, p_head_sha text,
    p_trigger text, p_submission text, p_entry_json text, p_entry_sha text,
    p_usage_tenants bigint[], p_usage_keys text[], p_usage_namespaces bigint[],
    p_usage_metrics text[], p_usage_quantities bigint[],
    p_audit_tenants bigint[], p_audit_namespaces bigint[], p_audit_json text[], p_audit_sha text[],
    OUT appended boolean, OUT actual_revision bigint
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    -- The conditional update takes the head's row lock first: a concurrent append waits for
    -- it, then finds the revision moved and updates nothing.
    UPDATE runs SET revision = p_revision, head_json = p_head_json, doc_sha256 = p_head_sha
     WHERE tenant_id = p_tenant AND namespace_id = p_namespace AND run_id = p_run
       AND revision = p_expected;
    IF NOT FOUND THEN
        appended := false;
        SELECT r.revision INTO actual_revision FROM runs r
         WHERE r.tenant_id = p_tenant AND r.namespace_id = p_namespace AND r.run_id = p_run;
        RETURN;
    END IF;
    INSERT INTO run_entries (tenant_id, namespace_id, run_id, revision, trigger_id,
                             submission_id, entry_json, doc_sha256)
    VALUES (p_tenant, p_namespace, p_run, p_revision, p_trigger, p_submission,
            p_entry_json, p_entry_sha);
    PERFORM dg_record_effects(p_tenant, p_usage_tenants, p_usage_keys, p_usage_namespaces,
                              p_usage_metrics, p_usage_quantities, p_audit_tenants,
                              p_audit_namespaces, p_audit_json, p_audit_sha);
    appended := true;
    actual_revision := p_revision;
END $$;
