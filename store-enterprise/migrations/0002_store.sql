-- Decision Gate enterprise schema, migration 2: the storage seams (scenarios, runs as a head
-- plus an append-only journal, data shapes) and the effects committed with them (usage events,
-- audit events). Conventions: see 0001_tenancy.sql and ADR 0008.
--
-- JSON documents are stored as text, byte for byte as written, with the SHA-256 of those bytes
-- in `doc_sha256`, checked on every read (jsonb would reorder keys and break the checksum).
-- Every write needs its namespace row (composite foreign keys), so a namespace is created
-- through the tenancy administration before anything is stored in it.

CREATE TABLE scenarios (
    tenant_id    bigint NOT NULL,
    namespace_id bigint NOT NULL,
    scenario_id  text COLLATE "C" NOT NULL,
    spec_hash    text   NOT NULL, -- JSON {algorithm, value} of the spec digest
    spec_json    text   NOT NULL,
    doc_sha256   text   NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, scenario_id),
    FOREIGN KEY (tenant_id, namespace_id) REFERENCES namespaces (tenant_id, namespace_id)
);

-- The head of a run: everything a trigger needs, none of the history. `scenario_id` is a copy
-- of the head document's, for the integrity scan and listing; the seam does not require the
-- scenario to exist, so it is not a foreign key.
CREATE TABLE runs (
    tenant_id    bigint NOT NULL,
    namespace_id bigint NOT NULL,
    run_id       text COLLATE "C" NOT NULL,
    scenario_id  text COLLATE "C" NOT NULL,
    revision     bigint NOT NULL CHECK (revision >= 1),
    head_json    text   NOT NULL,
    doc_sha256   text   NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, run_id),
    FOREIGN KEY (tenant_id, namespace_id) REFERENCES namespaces (tenant_id, namespace_id)
);
CREATE INDEX runs_scenario ON runs (tenant_id, namespace_id, scenario_id);

-- The append-only journal. Appending never rewrites earlier rows; every lookup is by index.
CREATE TABLE run_entries (
    tenant_id     bigint NOT NULL,
    namespace_id  bigint NOT NULL,
    run_id        text COLLATE "C" NOT NULL,
    revision      bigint NOT NULL CHECK (revision >= 1),
    trigger_id    text COLLATE "C",
    submission_id text COLLATE "C",
    entry_json    text   NOT NULL,
    doc_sha256    text   NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, run_id, revision),
    FOREIGN KEY (tenant_id, namespace_id, run_id) REFERENCES runs (tenant_id, namespace_id, run_id)
);
-- Idempotency: a run records each trigger id and each submission id once.
CREATE UNIQUE INDEX run_entries_trigger
    ON run_entries (tenant_id, namespace_id, run_id, trigger_id) WHERE trigger_id IS NOT NULL;
CREATE UNIQUE INDEX run_entries_submission
    ON run_entries (tenant_id, namespace_id, run_id, submission_id) WHERE submission_id IS NOT NULL;

CREATE TABLE data_shapes (
    tenant_id    bigint NOT NULL,
    namespace_id bigint NOT NULL,
    schema_id    text COLLATE "C" NOT NULL,
    version      text COLLATE "C" NOT NULL,
    record_json  text   NOT NULL,
    doc_sha256   text   NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, schema_id, version),
    FOREIGN KEY (tenant_id, namespace_id) REFERENCES namespaces (tenant_id, namespace_id)
);

-- Usage committed with the operation that caused it; an idempotency key counts once per tenant.
CREATE TABLE usage_events (
    tenant_id       bigint NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    namespace_id    bigint NOT NULL,
    metric          text   NOT NULL,
    quantity        bigint NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (tenant_id, idempotency_key),
    FOREIGN KEY (tenant_id, namespace_id) REFERENCES namespaces (tenant_id, namespace_id)
);

-- Audit events committed with the operation they record (the hash chain comes later).
CREATE TABLE audit_events (
    tenant_id    bigint NOT NULL,
    event_id     bigint GENERATED ALWAYS AS IDENTITY,
    namespace_id bigint NOT NULL,
    event_json   text   NOT NULL,
    doc_sha256   text   NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    FOREIGN KEY (tenant_id, namespace_id) REFERENCES namespaces (tenant_id, namespace_id)
);

SELECT dg_isolate_tenant_table('scenarios');
SELECT dg_isolate_tenant_table('runs');
SELECT dg_isolate_tenant_table('run_entries');
SELECT dg_isolate_tenant_table('data_shapes');
SELECT dg_isolate_tenant_table('usage_events');
SELECT dg_isolate_tenant_table('audit_events');
