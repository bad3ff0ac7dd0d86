-- Issuers beyond the one in the data directory: made by rotation, by `ca install-intermediate`
-- or by the Vault API's intermediate/set-signed. Their keys are sealed with the data directory's
-- seal key (never stored in clear), so every replica sharing the database can sign with them and
-- they switch together. The issuer in the data directory keeps certificate and key NULL here.
ALTER TABLE ca_issuers ADD COLUMN certificate BLOB;            -- issuing certificate, DER
ALTER TABLE ca_issuers ADD COLUMN parents_pem TEXT;          -- its parents up to the root, PEM
ALTER TABLE ca_issuers ADD COLUMN alternates_pem TEXT;       -- JSON array of other chains, PEM each
ALTER TABLE ca_issuers ADD COLUMN key_sealed BLOB;             -- sealed PKCS#8 key
ALTER TABLE ca_issuers ADD COLUMN name TEXT;                 -- Vault issuer_name
ALTER TABLE ca_issuers ADD COLUMN leaf_not_after_behavior TEXT;
ALTER TABLE ca_issuers ADD COLUMN activate_at INTEGER;            -- becomes the default at this time
ALTER TABLE ca_issuers ADD COLUMN successor_of TEXT;         -- the issuer a rotation replaces
-- One successor per issuer, however many replicas prepare one at the same moment.
CREATE UNIQUE INDEX ca_issuers_successor ON ca_issuers (successor_of) WHERE successor_of IS NOT NULL;
CREATE UNIQUE INDEX ca_issuers_name ON ca_issuers (name) WHERE name IS NOT NULL;

-- Keys made for an issuer not signed yet (a CSR awaiting an outside root: `ca csr`, Vault's
-- intermediate/generate/internal). Removed once a certificate for the key is installed.
CREATE TABLE ca_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT,
    key_sealed  BLOB NOT NULL,
    public_key  BLOB NOT NULL,       -- SubjectPublicKeyInfo, DER
    csr_pem     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
