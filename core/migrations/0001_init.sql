-- Decision Gate embedded store, schema version 1.
-- Every tenant-owned key leads with (tenant_id, namespace_id). JSON documents are stored with
-- a SHA-256 of their bytes, checked on every read, so silent corruption is refused.

CREATE TABLE scenarios (
    tenant_id     INTEGER NOT NULL,
    namespace_id  INTEGER NOT NULL,
    scenario_id   TEXT    NOT NULL,
    spec_hash     TEXT    NOT NULL, -- JSON {algorithm, value} of the spec digest
    spec_json     TEXT    NOT NULL,
    doc_sha256    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, scenario_id)
);

-- The head of a run: everything a trigger needs, none of the history.
CREATE TABLE runs (
    tenant_id     INTEGER NOT NULL,
    namespace_id  INTEGER NOT NULL,
    run_id        TEXT    NOT NULL,
    revision      INTEGER NOT NULL,
    head_json     TEXT    NOT NULL,
    doc_sha256    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, run_id)
);

-- The append-only journal. Appending never rewrites earlier rows.
CREATE TABLE run_entries (
    tenant_id     INTEGER NOT NULL,
    namespace_id  INTEGER NOT NULL,
    run_id        TEXT    NOT NULL,
    revision      INTEGER NOT NULL,
    trigger_id    TEXT,
    submission_id TEXT,
    entry_json    TEXT    NOT NULL,
    doc_sha256    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, run_id, revision),
    FOREIGN KEY (tenant_id, namespace_id, run_id) REFERENCES runs (tenant_id, namespace_id, run_id)
);

-- Idempotency: a run records each trigger id and each submission id once.
CREATE UNIQUE INDEX run_entries_trigger
    ON run_entries (tenant_id, namespace_id, run_id, trigger_id) WHERE trigger_id IS NOT NULL;
CREATE UNIQUE INDEX run_entries_submission
    ON run_entries (tenant_id, namespace_id, run_id, submission_id) WHERE submission_id IS NOT NULL;

CREATE TABLE data_shapes (
    tenant_id     INTEGER NOT NULL,
    namespace_id  INTEGER NOT NULL,
    schema_id     TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    record_json   TEXT    NOT NULL,
    doc_sha256    TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, namespace_id, schema_id, version)
);
