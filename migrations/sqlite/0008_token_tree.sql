-- Tokens form a tree: revoking a token revokes its children (orphans have no parent).
ALTER TABLE vault_tokens ADD COLUMN parent_accessor TEXT;
CREATE INDEX vault_tokens_parent ON vault_tokens (parent_accessor) WHERE parent_accessor IS NOT NULL;
