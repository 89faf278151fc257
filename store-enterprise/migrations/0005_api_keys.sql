-- Decision Gate enterprise schema, migration 5: API keys. Conventions: see 0001_tenancy.sql
-- and ADR 0008; the decisions are ADR 0015.
--
-- A key is presented as `dg_<key_id>_<secret>`. Only a keyed BLAKE3 hash of the secret is
-- stored, keyed by a pepper that lives in a file on the replicas and never in the database, so
-- a copy of this table (or a row written into it) cannot produce a key the server accepts.
--
-- Keys are not tenant rows: a credential is looked up before the call's tenant is known, and
-- the key decides which tenant that is. So the table has no `tenant_id` column and no tenant
-- policy; its scope columns say what the key may reach, and the application role reads it to
-- authenticate. It may create keys and move their end (expiry, revocation), never edit a key's
-- scope, roles or hash, and never delete one: a revoked key stays as the record of what it was.

-- (organisation, tenant) pairs, so a key's tenant is tied to its organisation by a foreign key.
ALTER TABLE tenants ADD CONSTRAINT tenants_organisation_tenant UNIQUE (organisation_id, tenant_id);

CREATE TABLE api_keys (
    key_id          text COLLATE "C" PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    organisation_id bigint      NOT NULL REFERENCES organisations (organisation_id),
    -- NULL: every tenant of the organisation (only an organisation role can be bound there).
    scope_tenant    bigint,
    -- NULL: every namespace of the tenant.
    scope_namespace bigint,
    roles           text[]      NOT NULL CHECK (
                        cardinality(roles) BETWEEN 1 AND 7
                        AND roles <@ ARRAY['org_owner', 'tenant_admin', 'namespace_admin',
                                           'operator', 'agent', 'auditor', 'viewer']),
    name            text        NOT NULL CHECK (name <> '' AND octet_length(name) <= 256),
    -- Hex of BLAKE3 keyed by the pepper, over the key id, a zero byte and the secret.
    secret_hash     text        NOT NULL CHECK (secret_hash ~ '^[0-9a-f]{64}$'),
    created_by      text        NOT NULL CHECK (created_by <> ''),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    -- The key this one replaced by rotation.
    replaces        text COLLATE "C" REFERENCES api_keys (key_id),
    CHECK (scope_namespace IS NULL OR scope_tenant IS NOT NULL),
    FOREIGN KEY (organisation_id, scope_tenant) REFERENCES tenants (organisation_id, tenant_id),
    FOREIGN KEY (scope_tenant, scope_namespace) REFERENCES namespaces (tenant_id, namespace_id)
);
CREATE INDEX api_keys_scope ON api_keys (organisation_id, scope_tenant, key_id);
