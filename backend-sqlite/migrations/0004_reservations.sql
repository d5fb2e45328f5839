-- stowage SQLite schema, version 4: reservations (SEMANTICS §4.2).
-- One row per reservation a budget remembers, in the canonical form of stowage_core::Reservation.
-- Expiry is never written: a 'held' row whose expires_at has passed is expired, read from the clock.
-- forget_at = Reservation::forget_at (min(ended_at + remember_ms, MAX_AMOUNT)); a row with
-- forget_at <= now is forgotten: every read skips it, and writes remove a few at a time.

CREATE TABLE stowage_reservations (
    ns          TEXT NOT NULL,
    budget      TEXT NOT NULL,
    id          TEXT NOT NULL,
    ttl_ms      INTEGER NOT NULL CHECK (ttl_ms >= 1),
    expires_at  INTEGER NOT NULL CHECK (expires_at >= 0),
    remember_ms INTEGER NOT NULL CHECK (remember_ms >= 0),
    state       TEXT NOT NULL CHECK (state IN ('held', 'refused', 'committed', 'released')),
    at          INTEGER,                   -- when it was resolved; NULL while held
    actual      TEXT,                      -- committed: the actual amounts as JSON
    outcome     TEXT,                      -- committed: core::encode_outcome of the commit's answer
    breaches    TEXT,                      -- refused: the breaches answered, as JSON
    forget_at   INTEGER NOT NULL,
    CHECK ((state = 'held') = (at IS NULL)),
    PRIMARY KEY (ns, budget, id)
) WITHOUT ROWID;
CREATE INDEX stowage_reservations_by_forget ON stowage_reservations (ns, forget_at);

-- The dimensions and amounts of each reservation. held and expires_at repeat the reservation's
-- (held = 1 while its state is 'held') so that pending, the sum over live holds, reads only the
-- partial, covering index below: the budget's held rows with expires_at > now.
CREATE TABLE stowage_reservation_amounts (
    ns         TEXT NOT NULL,
    budget     TEXT NOT NULL,
    id         TEXT NOT NULL,
    dimension  TEXT NOT NULL,
    amount     INTEGER NOT NULL CHECK (amount >= 0),
    held       INTEGER NOT NULL CHECK (held IN (0, 1)),
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (ns, budget, id, dimension)
) WITHOUT ROWID;
CREATE INDEX stowage_reservation_holds
    ON stowage_reservation_amounts (ns, budget, expires_at, dimension, amount) WHERE held = 1;
