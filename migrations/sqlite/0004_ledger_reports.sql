-- Reports and observations.
--
-- * origin: 'issued' (by this CA) or 'observed' (found by `ca-server ledger observe` in files,
--   kubeconfigs or TLS endpoints). Serials are unique among issued certificates only: other CAs'
--   serials may collide with ours or with each other's.
-- * fingerprint: SHA-256 of the DER; re-observing a certificate updates its observed row (one
--   that we issued ourselves keeps its issued row).
-- * lineage: hash of "same requester, same profile, same names" (observed: same source and
--   subject). A newer certificate of the same lineage sets superseded_at on the older ones, so
--   reports and metrics skip certificates that were already renewed.
-- * name: what reports call the certificate (common name, first SAN, or the observed file's name).
--
-- SQLite cannot drop a column constraint, so the table is rebuilt.
CREATE TABLE certificates_v4 (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    serial            BLOB    NOT NULL,
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
    not_before        INTEGER NOT NULL,
    not_after         INTEGER NOT NULL,
    protocol          TEXT    NOT NULL,
    requester         TEXT    NOT NULL,
    namespace         TEXT,
    service_account   TEXT,
    requester_detail  TEXT    NOT NULL DEFAULT '{}',
    request_id        TEXT    NOT NULL,
    created_at        INTEGER NOT NULL,
    revoked_at        INTEGER,
    revocation_reason INTEGER,
    der               BLOB,
    origin            TEXT    NOT NULL DEFAULT 'issued',
    source            TEXT,
    name              TEXT    NOT NULL DEFAULT '',
    fingerprint       BLOB,
    lineage           BLOB,
    superseded_at     INTEGER,
    observed_at       INTEGER
);

INSERT INTO certificates_v4 (id, serial, issuer_id, profile, subject, common_name, dns_names,
    ip_addresses, uris, emails, spiffe_id, key_algorithm, not_before, not_after, protocol,
    requester, namespace, service_account, requester_detail, request_id, created_at, revoked_at,
    revocation_reason, der, name)
SELECT id, serial, issuer_id, profile, subject, common_name, dns_names, ip_addresses, uris,
    emails, spiffe_id, key_algorithm, not_before, not_after, protocol, requester, namespace,
    service_account, requester_detail, request_id, created_at, revoked_at, revocation_reason, der,
    COALESCE(common_name, '')
FROM certificates;

DROP TABLE certificates;
ALTER TABLE certificates_v4 RENAME TO certificates;

CREATE UNIQUE INDEX certificates_serial_issued ON certificates (serial) WHERE origin = 'issued';
CREATE UNIQUE INDEX certificates_fingerprint_observed ON certificates (fingerprint) WHERE origin = 'observed';
-- Only current rows: marking predecessors superseded visits one or two rows per lineage, not
-- its whole history (an hourly SVID's lineage grows by thousands of rows a year).
CREATE INDEX certificates_lineage_current ON certificates (lineage, id) WHERE superseded_at IS NULL;
CREATE INDEX certificates_not_after ON certificates (not_after, id);
CREATE INDEX certificates_namespace_not_after ON certificates (namespace, not_after);
CREATE INDEX certificates_issuer_not_after ON certificates (issuer_id, not_after);
CREATE INDEX certificates_profile_not_after ON certificates (profile, not_after);
CREATE INDEX certificates_spiffe_id ON certificates (spiffe_id) WHERE spiffe_id IS NOT NULL;
-- The certificates reports and metrics care about: not revoked, not renewed.
CREATE INDEX certificates_current_not_after ON certificates (not_after, id)
    WHERE revoked_at IS NULL AND superseded_at IS NULL;
