-- Vault-compatible API state. Tokens are stored as SHA-256 hashes, never in clear.
CREATE TABLE vault_tokens (
    accessor     TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    policies     TEXT NOT NULL,
    display_name TEXT NOT NULL,
    meta         TEXT NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT
);
CREATE INDEX vault_tokens_expiry ON vault_tokens (expires_at) WHERE expires_at IS NOT NULL;

-- Named JSON documents: PKI roles, auth-method roles and configuration, ACL policies,
-- AppRole secret IDs (hashed). kind + mount + name identify one.
CREATE TABLE vault_objects (
    kind       TEXT NOT NULL,
    mount      TEXT NOT NULL,
    name       TEXT NOT NULL,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, mount, name)
);
