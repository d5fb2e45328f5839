-- stowage SQLite schema, version 3: budget windows (SEMANTICS §4.1).
-- Per budget with a windowed policy, the window its counters belong to: the policy window's
-- canonical spec (stowage_core::Window::spec) and the bounds Window::bounds_at gave, [start_ms, end_ms).
-- Rows exist only for budgets whose counters belong to a window; no row means lifetime counters
-- (or a windowed policy whose counters have not been rolled into a window yet).

CREATE TABLE stowage_windows (
    ns       TEXT NOT NULL,
    budget   TEXT NOT NULL,
    spec     TEXT NOT NULL,
    start_ms INTEGER NOT NULL CHECK (start_ms >= 0),
    end_ms   INTEGER NOT NULL CHECK (end_ms >= start_ms),
    PRIMARY KEY (ns, budget)
) WITHOUT ROWID;
