-- The issuing CAs this ledger belongs to. A server whose CA is not registered here refuses to
-- start against this database (a replica started on an empty data directory, or the wrong CA
-- files, would otherwise sign with another root into a shared ledger).
CREATE TABLE ca_issuers (
    issuer_id     TEXT PRIMARY KEY,
    subject       TEXT NOT NULL,
    registered_at BIGINT NOT NULL
);
