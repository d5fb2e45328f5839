-- stowage PostgreSQL schema, version 1, for one namespace.
-- The functions rely on READ COMMITTED (each statement sees what committed before it, so the state
-- read after pg_advisory_xact_lock is current); the backend sets it on every connection.
-- __SCHEMA__ is the namespace's schema (stowage_ns_<id>), __LOCK__ its advisory-lock class.
-- Every name column uses COLLATE "C": byte order, never a locale. Values are text: byte-exact.

CREATE TABLE __SCHEMA__.records (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- store order for ties
    name            text COLLATE "C" NOT NULL,
    stored_at       bigint NOT NULL CHECK (stored_at >= 0),
    value           text NOT NULL,
    idempotency_key text COLLATE "C"
);
CREATE INDEX records_by_name ON __SCHEMA__.records (name, stored_at DESC, id DESC);
CREATE INDEX records_by_time ON __SCHEMA__.records (stored_at);
CREATE UNIQUE INDEX records_by_key ON __SCHEMA__.records (name, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE __SCHEMA__.policies (
    budget text COLLATE "C" PRIMARY KEY
);

CREATE TABLE __SCHEMA__.limits (
    budget    text COLLATE "C" NOT NULL,
    dimension text COLLATE "C" NOT NULL,
    soft      bigint CHECK (soft >= 0),
    hard      bigint CHECK (hard >= 0),
    PRIMARY KEY (budget, dimension)
);

CREATE TABLE __SCHEMA__.counters (
    budget    text COLLATE "C" NOT NULL,
    dimension text COLLATE "C" NOT NULL,
    value     bigint NOT NULL CHECK (value >= 0),
    PRIMARY KEY (budget, dimension)
);

CREATE TABLE __SCHEMA__.dedup (
    budget      text COLLATE "C" NOT NULL,
    dedup_key   text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,                 -- stowage_core::dedup_fingerprint
    written_at  bigint NOT NULL,               -- the backend clock, ms
    status      text NOT NULL,                 -- ok | soft | hard
    b_dims      text[] NOT NULL,
    b_usage     bigint[] NOT NULL,
    b_limits    bigint[] NOT NULL,
    b_crossed   boolean[] NOT NULL,
    PRIMARY KEY (budget, dedup_key)
);
CREATE INDEX dedup_by_time ON __SCHEMA__.dedup (written_at);

-- SEMANTICS §3 steps 2-6 in one call. p_dims is sorted by the caller (byte order) and unique.
-- Returns status: ok | soft | hard | replay-ok | replay-soft | replay-hard | conflict | overflow,
-- and the breaches (for overflow: the dimension, its counter and the delta).
CREATE FUNCTION __SCHEMA__.report_usage(
    p_budget text, p_dims text[], p_deltas bigint[], p_key text, p_fingerprint text,
    p_now bigint, p_ttl bigint)
RETURNS TABLE (status text, b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[])
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n int := cardinality(p_dims);
    cur bigint[];
    softs bigint[];
    hards bigint[];
    nxt bigint[] := '{}';
    rec record;
    st text := 'ok';
    bd text[] := '{}';
    bu bigint[] := '{}';
    bl bigint[] := '{}';
    bc boolean[] := '{}';
BEGIN
    -- One lock per (namespace, budget) serializes every change of the budget: no deadlock, no lost update.
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    IF p_key IS NOT NULL THEN
        SELECT d.fingerprint, d.written_at, d.status, d.b_dims, d.b_usage, d.b_limits, d.b_crossed
          INTO rec FROM __SCHEMA__.dedup d WHERE d.budget = p_budget AND d.dedup_key = p_key;
        IF FOUND AND p_now - p_ttl < rec.written_at THEN
            IF rec.fingerprint <> p_fingerprint THEN
                RETURN QUERY SELECT 'conflict'::text, NULL::text[], NULL::bigint[], NULL::bigint[], NULL::boolean[];
            ELSE
                RETURN QUERY SELECT 'replay-' || rec.status, rec.b_dims, rec.b_usage, rec.b_limits, rec.b_crossed;
            END IF;
            RETURN;
        END IF;
    END IF;

    SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord),
           array_agg(l.soft ORDER BY u.ord),
           array_agg(l.hard ORDER BY u.ord)
      INTO cur, softs, hards
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      LEFT JOIN __SCHEMA__.counters c ON c.budget = p_budget AND c.dimension = u.dim
      LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;

    FOR i IN 1..n LOOP
        IF p_deltas[i] > 9223372036854775807 - cur[i] THEN
            RETURN QUERY SELECT 'overflow'::text, ARRAY[p_dims[i]], ARRAY[cur[i]], ARRAY[p_deltas[i]], NULL::boolean[];
            RETURN;
        END IF;
        nxt := nxt || (cur[i] + p_deltas[i]);
    END LOOP;

    FOR i IN 1..n LOOP
        IF hards[i] IS NOT NULL AND nxt[i] > hards[i] THEN
            st := 'hard';
            bd := bd || p_dims[i]; bu := bu || cur[i]; bl := bl || hards[i]; bc := bc || (cur[i] <= hards[i]);
        END IF;
    END LOOP;

    IF st = 'ok' THEN
        INSERT INTO __SCHEMA__.counters AS c (budget, dimension, value)
             SELECT p_budget, u.dim, u.v FROM unnest(p_dims, nxt) AS u(dim, v)
        ON CONFLICT (budget, dimension) DO UPDATE SET value = excluded.value;
        FOR i IN 1..n LOOP
            IF softs[i] IS NOT NULL AND nxt[i] > softs[i] THEN
                st := 'soft';
                bd := bd || p_dims[i]; bu := bu || nxt[i]; bl := bl || softs[i]; bc := bc || (cur[i] <= softs[i]);
            END IF;
        END LOOP;
    END IF;

    IF p_key IS NOT NULL THEN
        INSERT INTO __SCHEMA__.dedup AS d
               (budget, dedup_key, fingerprint, written_at, status, b_dims, b_usage, b_limits, b_crossed)
        VALUES (p_budget, p_key, p_fingerprint, p_now, st, bd, bu, bl, bc)
        ON CONFLICT (budget, dedup_key) DO UPDATE SET
            fingerprint = excluded.fingerprint, written_at = excluded.written_at, status = excluded.status,
            b_dims = excluded.b_dims, b_usage = excluded.b_usage, b_limits = excluded.b_limits,
            b_crossed = excluded.b_crossed;
        -- Keep the table bounded: remove a few expired records (oldest first) on the side.
        -- ORDER BY makes even the cached generic plan walk dedup_by_time instead of scanning the
        -- table; SKIP LOCKED never waits for (or deadlocks with) a report rewriting one of them.
        WITH expired AS (
            SELECT x.ctid FROM __SCHEMA__.dedup x
             WHERE x.written_at <= p_now - p_ttl
             ORDER BY x.written_at
             LIMIT 8 FOR UPDATE SKIP LOCKED)
        DELETE FROM __SCHEMA__.dedup d USING expired e WHERE d.ctid = e.ctid;
    END IF;

    RETURN QUERY SELECT st, bd, bu, bl, bc;
END
$fn$;

-- Replaces the whole policy of a budget.
CREATE FUNCTION __SCHEMA__.set_policy(p_budget text, p_dims text[], p_softs bigint[], p_hards bigint[])
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    DELETE FROM __SCHEMA__.limits WHERE budget = p_budget;
    INSERT INTO __SCHEMA__.limits (budget, dimension, soft, hard)
         SELECT p_budget, u.dim, u.soft, u.hard FROM unnest(p_dims, p_softs, p_hards) AS u(dim, soft, hard);
    INSERT INTO __SCHEMA__.policies (budget) VALUES (p_budget) ON CONFLICT DO NOTHING;
END
$fn$;

-- Removes a budget's policy; true when one existed.
CREATE FUNCTION __SCHEMA__.delete_policy(p_budget text)
RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    DELETE FROM __SCHEMA__.limits WHERE budget = p_budget;
    DELETE FROM __SCHEMA__.policies WHERE budget = p_budget;
    RETURN FOUND;
END
$fn$;

-- Removes every counter of a budget.
CREATE FUNCTION __SCHEMA__.reset_usage(p_budget text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    DELETE FROM __SCHEMA__.counters WHERE budget = p_budget;
END
$fn$;

-- Appends once per (record, key). Returns 'appended', or 'exists' with the stored value and time.
CREATE FUNCTION __SCHEMA__.store_idempotent(p_name text, p_stored_at bigint, p_value text, p_key text)
RETURNS TABLE (status text, value text, stored_at bigint) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
BEGIN
    INSERT INTO __SCHEMA__.records (name, stored_at, value, idempotency_key)
    VALUES (p_name, p_stored_at, p_value, p_key)
    ON CONFLICT (name, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF FOUND THEN
        RETURN QUERY SELECT 'appended'::text, NULL::text, NULL::bigint;
    ELSE
        RETURN QUERY SELECT 'exists'::text, r.value, r.stored_at FROM __SCHEMA__.records r
                      WHERE r.name = p_name AND r.idempotency_key = p_key;
    END IF;
END
$fn$;
