-- CRL shards: the shard an issued certificate's CRL distribution point names ([ca] crl_shards).
-- NULL: issued without sharding (listed only on the full CRL).
ALTER TABLE certificates ADD COLUMN crl_shard BIGINT;
