-- Renewable tokens (Vault's token renew): the TTL a renewal grants by default and the latest
-- expiry any renewal may reach (created_at + explicit max TTL, or the 768h system maximum).
-- Rows from before this migration keep NULL: they are not renewable.
ALTER TABLE vault_tokens ADD COLUMN ttl BIGINT;
ALTER TABLE vault_tokens ADD COLUMN max_expires_at BIGINT;
