-- Decision Gate enterprise schema, migration 7: identity providers set through the admin API.
-- Conventions: see 0001_tenancy.sql and ADR 0008; the decisions are ADR 0015.
--
-- An organisation's owner may trust further OpenID providers at run time, beside those of the
-- configuration file. Their settings are the same document as an `[[identity.issuers]]` entry
-- (checked by the server before it is written); every replica reads this table at most once a
-- second. An issuer speaks for one organisation.

CREATE TABLE identity_providers (
    issuer          text        PRIMARY KEY CHECK (issuer <> '' AND octet_length(issuer) <= 1024),
    organisation_id bigint      NOT NULL REFERENCES organisations (organisation_id),
    settings_json   text        NOT NULL CHECK (octet_length(settings_json) <= 262144),
    updated_by      text        NOT NULL CHECK (updated_by <> ''),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX identity_providers_organisation ON identity_providers (organisation_id, issuer);
