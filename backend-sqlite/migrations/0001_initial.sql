-- stowage SQLite schema, version 1. Every table is keyed by namespace first.
-- Text compares with SQLite's BINARY collation: byte order, as the contract requires.

CREATE TABLE stowage_records (
    id              INTEGER PRIMARY KEY,   -- store order; ties of stored_at are broken by it
    ns              TEXT NOT NULL,
    name            TEXT NOT NULL,
    stored_at       INTEGER NOT NULL,
    value           TEXT NOT NULL,         -- serialized JSON, byte-exact
    idempotency_key TEXT
);
CREATE INDEX stowage_records_by_name ON stowage_records (ns, name, stored_at DESC, id DESC);
CREATE INDEX stowage_records_by_time ON stowage_records (ns, stored_at);
CREATE UNIQUE INDEX stowage_records_by_key
    ON stowage_records (ns, name, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE stowage_policies (
    ns     TEXT NOT NULL,
    budget TEXT NOT NULL,
    policy TEXT NOT NULL,                  -- BudgetPolicy as JSON (integers are exact)
    PRIMARY KEY (ns, budget)
) WITHOUT ROWID;

CREATE TABLE stowage_counters (
    ns        TEXT NOT NULL,
    budget    TEXT NOT NULL,
    dimension TEXT NOT NULL,
    value     INTEGER NOT NULL CHECK (value >= 0),
    PRIMARY KEY (ns, budget, dimension)
) WITHOUT ROWID;

CREATE TABLE stowage_dedup (
    ns          TEXT NOT NULL,
    budget      TEXT NOT NULL,
    dedup_key   TEXT NOT NULL,
    fingerprint TEXT NOT NULL,             -- core::dedup_fingerprint of the report
    outcome     TEXT NOT NULL,             -- core::encode_outcome of the answer
    written_at  INTEGER NOT NULL,          -- the backend clock when recorded
    PRIMARY KEY (ns, budget, dedup_key)
) WITHOUT ROWID;
CREATE INDEX stowage_dedup_by_time ON stowage_dedup (ns, written_at);
