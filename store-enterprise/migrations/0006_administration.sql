-- Decision Gate enterprise schema, migration 6: role bindings and administration at run time.
-- Conventions: see 0001_tenancy.sql and ADR 0008; the decisions are ADR 0015.
--
-- A role binding grants a role to an identity-provider subject (issuer + subject) at an
-- organisation, a tenant or a namespace. Like API keys, bindings are read while a caller is
-- authenticated, before its tenant is known, so they are not tenant rows; the foreign keys tie
-- every scope to its organisation. The admin API (the application role) creates tenants and
-- namespaces, moves their state, and grants and revokes bindings; it never renames or deletes
-- a tenant or namespace row: "deleted" is a state.

CREATE TABLE role_bindings (
    binding_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id bigint      NOT NULL REFERENCES organisations (organisation_id),
    scope_tenant    bigint,
    scope_namespace bigint,
    issuer          text        NOT NULL CHECK (issuer <> '' AND octet_length(issuer) <= 1024),
    subject         text        NOT NULL CHECK (subject <> '' AND octet_length(subject) <= 1024),
    role            text        NOT NULL CHECK (role IN ('org_owner', 'tenant_admin',
                                    'namespace_admin', 'operator', 'agent', 'auditor', 'viewer')),
    created_by      text        NOT NULL CHECK (created_by <> ''),
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (scope_namespace IS NULL OR scope_tenant IS NOT NULL),
    -- An organisation's owner owns the organisation; a tenant's administrator the tenant.
    CHECK (role <> 'org_owner' OR scope_tenant IS NULL),
    CHECK (role <> 'tenant_admin' OR scope_namespace IS NULL),
    FOREIGN KEY (organisation_id, scope_tenant) REFERENCES tenants (organisation_id, tenant_id),
    FOREIGN KEY (scope_tenant, scope_namespace) REFERENCES namespaces (tenant_id, namespace_id),
    UNIQUE NULLS NOT DISTINCT (issuer, subject, role, organisation_id, scope_tenant,
                               scope_namespace)
);
CREATE INDEX role_bindings_subject ON role_bindings (issuer, subject);
CREATE INDEX role_bindings_scope ON role_bindings (organisation_id, binding_id);

-- The same rule for the roles of API keys.
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_scope CHECK (
    (NOT 'org_owner' = ANY (roles) OR scope_tenant IS NULL)
    AND (NOT 'tenant_admin' = ANY (roles) OR scope_namespace IS NULL));

-- An organisation's tenants, for its administrators. Tenants are tenant rows (row-level
-- security shows a transaction one tenant), so listing those of an organisation runs with the
-- owner's rights; it answers ids, names and states of one organisation and nothing else.
CREATE FUNCTION dg_organisation_tenants(p_organisation bigint, p_after bigint, p_limit int)
RETURNS TABLE (tenant_id bigint, name text, state text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
    SELECT t.tenant_id, t.name, t.state
      FROM tenants t
     WHERE t.organisation_id = p_organisation AND t.tenant_id > coalesce(p_after, 0)
     ORDER BY t.tenant_id
     LIMIT p_limit;
$$;
REVOKE EXECUTE ON FUNCTION dg_organisation_tenants(bigint, bigint, int) FROM PUBLIC;
