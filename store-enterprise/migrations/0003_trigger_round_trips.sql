-- Decision Gate enterprise schema, migration 3: a trigger's read and its write, one round trip
-- each. Conventions: see 0001_tenancy.sql and ADR 0008.
--
-- Deciding a trigger reads the run's head with the entry already recording the trigger id, and
-- appends the next entry with its head and effects. As separate statements inside explicit
-- transactions that took eleven round trips to the database, and on loopback the round trips,
-- not the work, were most of a trigger's cost on both sides. Both functions run with the
-- caller's rights (SECURITY INVOKER, the default): row-level security applies to every row they
-- touch exactly as to the statements they replace, and each first sets the tenant
-- transaction-locally, as the store's BEGIN batch does. Called as one statement outside an
-- explicit transaction, the setting ends with the statement's own transaction, and an error
-- anywhere rolls back everything the call wrote.

CREATE FUNCTION dg_run_and_trigger(
    p_tenant bigint, p_namespace bigint, p_run text, p_trigger text
) RETURNS TABLE (out_head_json text, out_head_sha text, out_entry_json text, out_entry_sha text)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM set_config('app.tenant_id', p_tenant::text, true);
    RETURN QUERY
        SELECT r.head_json, r.doc_sha256, e.entry_json, e.doc_sha256
        FROM runs r
        LEFT JOIN run_entries e
               ON e.tenant_id = r.tenant_id AND e.namespace_id = r.namespace_id
              AND e.run_id = r.run_id AND e.trigger_id = p_trigger
        WHERE r.tenant_id = p_tenant AND r.namespace_id = p_namespace AND r.run_id = p_run;
END $$;

-- Appends when the head is still at p_expected: `appended` is true, and `actual_revision` is
-- p_revision. Otherwise nothing is written: `actual_revision` is the run's revision, or NULL
-- when there is no such run. A trigger or submission id already recorded fails with the unique
-- violation of its index, as the plain INSERT did.
CREATE FUNCTION dg_append(
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
    INSERT INTO usage_events (tenant_id, idempotency_key, namespace_id, metric, quantity)
    SELECT * FROM unnest(p_usage_tenants, p_usage_keys, p_usage_namespaces, p_usage_metrics,
                         p_usage_quantities)
    ON CONFLICT DO NOTHING;
    INSERT INTO audit_events (tenant_id, namespace_id, event_json, doc_sha256)
    SELECT * FROM unnest(p_audit_tenants, p_audit_namespaces, p_audit_json, p_audit_sha);
    appended := true;
    actual_revision := p_revision;
END $$;
