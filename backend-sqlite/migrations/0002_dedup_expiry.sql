-- stowage SQLite schema, version 2: a dedup record carries its own expiry.
-- expires_at = written_at + dedup_ttl_ms of the handle that wrote the record, capped at MAX_AMOUNT
-- (stowage_core::dedup_expiry). A record is live while now < expires_at, whatever TTL the reading
-- handle has, and garbage collection removes only records with expires_at <= now.
-- Records written under version 1 did not keep their writer's TTL: they get the default TTL,
-- 86 400 000 ms (24 h), capped at MAX_AMOUNT = 9223372036854775807 — the rule of every backend.
-- (Capped in integers: SQLite would turn an overflowing sum into a REAL.)

ALTER TABLE stowage_dedup ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;

UPDATE stowage_dedup SET expires_at = CASE
    WHEN written_at > 9223372036854775807 - 86400000 THEN 9223372036854775807
    ELSE written_at + 86400000
END;

-- The garbage collection looks for (ns, expires_at <= now); the index by write time is no longer used.
DROP INDEX stowage_dedup_by_time;
CREATE INDEX stowage_dedup_by_expiry ON stowage_dedup (ns, expires_at);
