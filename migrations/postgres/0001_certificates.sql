-- The issuance ledger: one row per certificate we issued (or, later, observed).
-- Times are Unix seconds; list-valued columns hold JSON arrays of strings.
CREATE TABLE certificates (
    id                BIGSERIAL PRIMARY KEY,
    serial            BYTEA   NOT NULL UNIQUE,
    issuer_id         TEXT    NOT NULL,
    profile           TEXT    NOT NULL,
    subject           TEXT    NOT NULL,
    common_name       TEXT,
    dns_names         TEXT    NOT NULL DEFAULT '[]',
    ip_addresses      TEXT    NOT NULL DEFAULT '[]',
    uris              TEXT    NOT NULL DEFAULT '[]',
    emails            TEXT    NOT NULL DEFAULT '[]',
    spiffe_id         TEXT,
    key_algorithm     TEXT    NOT NULL,
    not_before        BIGINT  NOT NULL,
    not_after         BIGINT  NOT NULL,
    protocol          TEXT    NOT NULL,
    requester         TEXT    NOT NULL,
    namespace         TEXT,
    service_account   TEXT,
    requester_detail  TEXT    NOT NULL DEFAULT '{}',
    request_id        TEXT    NOT NULL,
    created_at        BIGINT  NOT NULL,
    revoked_at        BIGINT,
    revocation_reason INTEGER,
    der               BYTEA
);

CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_namespace_not_after ON certificates (namespace, not_after);
CREATE INDEX certificates_issuer_not_after ON certificates (issuer_id, not_after);
CREATE INDEX certificates_profile_not_after ON certificates (profile, not_after);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id) WHERE spiffe_id IS NOT NULL;
