-- ACME protocol state (RFC 8555). JSON-valued columns are owned by ca-server's acme module.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE acme_accounts (
    id             TEXT PRIMARY KEY,
    key_thumbprint TEXT NOT NULL UNIQUE,
    jwk            TEXT NOT NULL,
    status         TEXT NOT NULL,
    contact        TEXT NOT NULL DEFAULT '[]',
    eab_kid        TEXT,
    created_at     INTEGER NOT NULL
);

CREATE TABLE acme_eab_keys (
    kid        TEXT PRIMARY KEY,
    hmac_key   BLOB NOT NULL,
    policy     TEXT NOT NULL DEFAULT '{}',
    account_id TEXT,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE acme_orders (
    id                 TEXT PRIMARY KEY,
    account_id         TEXT NOT NULL,
    status             TEXT NOT NULL,
    expires            INTEGER NOT NULL,
    identifiers        TEXT NOT NULL,
    profile            TEXT NOT NULL,
    not_before         INTEGER,
    not_after          INTEGER,
    error              TEXT,
    certificate_serial BLOB,
    replaces           TEXT,
    created_at         INTEGER NOT NULL
);
CREATE INDEX acme_orders_account ON acme_orders (account_id, created_at);
CREATE INDEX acme_orders_replaces ON acme_orders (replaces) WHERE replaces IS NOT NULL;

CREATE TABLE acme_authorizations (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL,
    account_id       TEXT NOT NULL,
    identifier_type  TEXT NOT NULL,
    identifier_value TEXT NOT NULL,
    wildcard         INTEGER NOT NULL,
    status           TEXT NOT NULL,
    expires          INTEGER NOT NULL,
    challenges       TEXT NOT NULL
);
CREATE INDEX acme_authorizations_order ON acme_authorizations (order_id);

-- Nonces are stateless (HMAC-authenticated); only redeemed ones are stored, until they expire.
CREATE TABLE acme_used_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_at INTEGER NOT NULL
);
CREATE INDEX acme_used_nonces_expiry ON acme_used_nonces (expires_at);
