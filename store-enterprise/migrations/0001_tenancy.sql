-- Decision Gate enterprise schema, migration 1: tenancy (organisation -> tenant -> namespace).
--
-- Conventions for every migration in this directory (ADR 0008):
-- * Expand -> backfill -> enforce. A change that old replicas could trip over ships in steps:
--   first add (nullable columns, new tables, new indexes CONCURRENTLY in a no-transaction
--   migration), then backfill in batches, then enforce (NOT NULL, constraints VALIDATEd) in a
--   later release once no replica runs the old code. Never edit an applied migration: the
--   schema check refuses a database whose checksums differ from the binary's.
-- * Every tenant-owned table has a NOT NULL `tenant_id` leading its primary key, composite
--   foreign keys `(tenant_id, ...)` to its parents, and `dg_isolate_tenant_table` applied, which
--   enables and forces row-level security with the one tenant policy.
-- * Text ids use COLLATE "C" so ordering (and so paging) is byte order, as in the seams.

CREATE TABLE organisations (
    organisation_id bigint      PRIMARY KEY CHECK (organisation_id > 0),
    name            text        NOT NULL CHECK (name <> ''),
    state           text        NOT NULL DEFAULT 'active'
                                CHECK (state IN ('active', 'suspended', 'deleted')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenants (
    tenant_id       bigint      PRIMARY KEY CHECK (tenant_id > 0),
    organisation_id bigint      NOT NULL REFERENCES organisations (organisation_id),
    name            text        NOT NULL CHECK (name <> ''),
    state           text        NOT NULL DEFAULT 'active'
                                CHECK (state IN ('active', 'suspended', 'deleted')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_organisation ON tenants (organisation_id);

-- Namespace ids are per tenant: namespace 1 of tenant 1 and namespace 1 of tenant 2 differ.
CREATE TABLE namespaces (
    tenant_id    bigint      NOT NULL REFERENCES tenants (tenant_id),
    namespace_id bigint      NOT NULL CHECK (namespace_id > 0),
    name         text        NOT NULL CHECK (name <> ''),
    state        text        NOT NULL DEFAULT 'active'
                             CHECK (state IN ('active', 'suspended', 'deleted')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, namespace_id)
);

-- Row-level security for one tenant table: only rows of the transaction's tenant are visible
-- or writable. `app.tenant_id` is set with set_config(..., true) (transaction-local) by the
-- store. Unset it reads NULL, and after an earlier transaction-local set on the same
-- connection it reads '' (NULLIF turns that into NULL too): either way the policy is false and
-- no row matches. FORCE applies the policy to the table owner as well; only superusers and
-- BYPASSRLS roles (migrations, the integrity scan) see through it.
CREATE FUNCTION dg_isolate_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint) '
        'WITH CHECK (tenant_id = NULLIF(current_setting(''app.tenant_id'', true), '''')::bigint)',
        t);
END
$$;
REVOKE EXECUTE ON FUNCTION dg_isolate_tenant_table(regclass) FROM PUBLIC;

SELECT dg_isolate_tenant_table('tenants');
SELECT dg_isolate_tenant_table('namespaces');
