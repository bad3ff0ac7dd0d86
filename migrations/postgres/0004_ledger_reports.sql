-- Reports and observations (see migrations/sqlite/0004_ledger_reports.sql for the columns).
-- Serials are unique among issued certificates only: other CAs' serials may collide.
ALTER TABLE certificates DROP CONSTRAINT certificates_serial_key;
ALTER TABLE certificates
    ADD COLUMN origin        TEXT   NOT NULL DEFAULT 'issued',
    ADD COLUMN source        TEXT,
    ADD COLUMN name          TEXT   NOT NULL DEFAULT '',
    ADD COLUMN fingerprint   BYTEA,
    ADD COLUMN lineage       BYTEA,
    ADD COLUMN superseded_at BIGINT,
    ADD COLUMN observed_at   BIGINT;
UPDATE certificates SET name = COALESCE(common_name, '');

CREATE UNIQUE INDEX certificates_serial_issued ON certificates (serial) WHERE origin = 'issued';
CREATE UNIQUE INDEX certificates_fingerprint_observed ON certificates (fingerprint) WHERE origin = 'observed';
-- Only current rows: marking predecessors superseded visits one or two rows per lineage, not
-- its whole history (an hourly SVID's lineage grows by thousands of rows a year).
CREATE INDEX certificates_lineage_current ON certificates (lineage, id) WHERE superseded_at IS NULL;
CREATE INDEX certificates_current_not_after ON certificates (not_after, id)
    WHERE revoked_at IS NULL AND superseded_at IS NULL;
