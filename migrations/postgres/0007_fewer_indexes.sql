-- Per-column expiry indexes cost every insert three more index updates; reports filter the
-- current rows through certificates_current_not_after instead (see docs/storage.md).
DROP INDEX certificates_namespace_not_after;
DROP INDEX certificates_issuer_not_after;
DROP INDEX certificates_profile_not_after;
