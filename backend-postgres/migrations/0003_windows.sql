-- stowage PostgreSQL schema, version 3: budget windows (SEMANTICS §4.1).
-- The policy keeps its window as Window::spec() text (NULL: lifetime counters); a budget's counters
-- belong to the window stored next to them (spec and bounds, computed by Window::bounds_at in Rust:
-- the server never computes a window, it only compares what Rust gave it).
-- The functions of versions 1-2 whose signatures change are dropped: a process of an older build
-- gets "undefined function" instead of silently counting a windowed budget over its lifetime.

ALTER TABLE __SCHEMA__.policies ADD COLUMN window_spec text;

CREATE TABLE __SCHEMA__.windows (
    budget   text COLLATE "C" PRIMARY KEY,
    spec     text NOT NULL,
    start_ms bigint NOT NULL CHECK (start_ms >= 0),
    end_ms   bigint NOT NULL CHECK (end_ms >= 0)
);

DROP FUNCTION __SCHEMA__.report_usage(text, text[], bigint[], text, text, bigint, bigint);
DROP FUNCTION __SCHEMA__.set_policy(text, text[], bigint[], bigint[]);
DROP FUNCTION __SCHEMA__.delete_policy(text);

-- Whether the counters of the stored window (spec s_spec, end s_end; s_spec NULL: none stored)
-- are those a policy window p_spec counts into at p_now: WindowStep::at(..).keeps_counters().
-- Lifetime (no policy window) keeps them; so does a stored window of the same spec that has not
-- passed (now < end, or end = MAX_AMOUNT: the last window never ends); a passed or other window
-- drops them; nothing stored keeps them.
CREATE FUNCTION __SCHEMA__.keeps_counters(p_spec text, s_spec text, s_end bigint, p_now bigint)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $fn$
    SELECT p_spec IS NULL OR s_spec IS NULL
        OR (s_spec = p_spec AND (p_now < s_end OR s_end = 9223372036854775807))
$fn$;

-- SEMANTICS §3 steps 2-6 plus the lazy window rollover, in one call. p_dims is sorted by the caller
-- (byte order) and unique. p_spec, p_start, p_end: the bounds Rust computed for window p_spec at
-- p_now, or NULLs.
-- Returns status: ok | soft | hard | replay-ok | replay-soft | replay-hard | conflict | overflow |
-- window, and the breaches (for overflow: the dimension, its counter and the delta); for window
-- (the policy's window has rolled over and no bounds for its spec were passed; nothing applied,
-- nothing recorded) `spec` is the policy's window spec: call again with its bounds at p_now.
CREATE FUNCTION __SCHEMA__.report_usage(
    p_budget text, p_dims text[], p_deltas bigint[], p_key text, p_fingerprint text,
    p_now bigint, p_ttl bigint, p_spec text, p_start bigint, p_end bigint)
RETURNS TABLE (status text, b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[],
               spec text)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n int := cardinality(p_dims);
    cur bigint[];
    softs bigint[];
    hards bigint[];
    nxt bigint[] := '{}';
    rec record;
    pspec text;
    sspec text;
    send bigint;
    roll boolean := false;
    keep boolean := true;
    st text := 'ok';
    bd text[] := '{}';
    bu bigint[] := '{}';
    bl bigint[] := '{}';
    bc boolean[] := '{}';
BEGIN
    -- One lock per (namespace, budget) serializes every change of the budget: no deadlock, no lost update.
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    IF p_key IS NOT NULL THEN
        SELECT d.fingerprint, d.expires_at, d.status, d.b_dims, d.b_usage, d.b_limits, d.b_crossed
          INTO rec FROM __SCHEMA__.dedup d WHERE d.budget = p_budget AND d.dedup_key = p_key;
        -- Live while now < the expiry its writer gave it, whatever this caller's TTL is.
        IF FOUND AND p_now < rec.expires_at THEN
            IF rec.fingerprint <> p_fingerprint THEN
                RETURN QUERY SELECT 'conflict'::text, NULL::text[], NULL::bigint[], NULL::bigint[],
                                    NULL::boolean[], NULL::text;
            ELSE
                RETURN QUERY SELECT 'replay-' || rec.status, rec.b_dims, rec.b_usage, rec.b_limits,
                                    rec.b_crossed, NULL::text;
            END IF;
            RETURN;
        END IF;
    END IF;

    -- WindowStep::at: lifetime, current, or roll (to the bounds Rust passed for the policy's spec).
    SELECT p.window_spec INTO pspec FROM __SCHEMA__.policies p WHERE p.budget = p_budget;
    IF pspec IS NOT NULL THEN
        SELECT w.spec, w.end_ms INTO sspec, send FROM __SCHEMA__.windows w WHERE w.budget = p_budget;
        IF sspec IS NULL OR sspec <> pspec OR NOT __SCHEMA__.keeps_counters(pspec, sspec, send, p_now) THEN
            IF p_spec IS NULL OR p_spec <> pspec OR p_start IS NULL OR p_end IS NULL THEN
                RETURN QUERY SELECT 'window'::text, NULL::text[], NULL::bigint[], NULL::bigint[],
                                    NULL::boolean[], pspec;
                RETURN;
            END IF;
            roll := true;
            keep := sspec IS NULL;
        END IF;
    END IF;

    SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord),
           array_agg(l.soft ORDER BY u.ord),
           array_agg(l.hard ORDER BY u.ord)
      INTO cur, softs, hards
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      -- The counters of a passed window count as zero.
      LEFT JOIN __SCHEMA__.counters c ON keep AND c.budget = p_budget AND c.dimension = u.dim
      LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;

    FOR i IN 1..n LOOP
        IF p_deltas[i] > 9223372036854775807 - cur[i] THEN
            RETURN QUERY SELECT 'overflow'::text, ARRAY[p_dims[i]], ARRAY[cur[i]], ARRAY[p_deltas[i]],
                                NULL::boolean[], NULL::text;
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
        -- A report that applies replaces a passed window's counters and stores the new window.
        IF roll THEN
            IF NOT keep THEN
                DELETE FROM __SCHEMA__.counters WHERE budget = p_budget;
            END IF;
            INSERT INTO __SCHEMA__.windows AS w (budget, spec, start_ms, end_ms)
            VALUES (p_budget, pspec, p_start, p_end)
            ON CONFLICT (budget) DO UPDATE SET
                spec = excluded.spec, start_ms = excluded.start_ms, end_ms = excluded.end_ms;
        END IF;
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
               (budget, dedup_key, fingerprint, written_at, expires_at, status, b_dims, b_usage, b_limits, b_crossed)
        VALUES (p_budget, p_key, p_fingerprint, p_now,
                -- stowage_core::dedup_expiry: now + ttl capped at MAX_AMOUNT, compared before adding.
                CASE WHEN p_ttl >= 9223372036854775807 - p_now THEN 9223372036854775807 ELSE p_now + p_ttl END,
                st, bd, bu, bl, bc)
        ON CONFLICT (budget, dedup_key) DO UPDATE SET
            fingerprint = excluded.fingerprint, written_at = excluded.written_at,
            expires_at = excluded.expires_at, status = excluded.status,
            b_dims = excluded.b_dims, b_usage = excluded.b_usage, b_limits = excluded.b_limits,
            b_crossed = excluded.b_crossed;
        -- Keep the table bounded: remove a few records whose own expiry has passed (see version 2).
        WITH expired AS (
            SELECT x.ctid FROM __SCHEMA__.dedup x
             WHERE x.expires_at <= p_now
             ORDER BY x.expires_at
             LIMIT 8 FOR UPDATE SKIP LOCKED)
        DELETE FROM __SCHEMA__.dedup d USING expired e WHERE d.ctid = e.ctid;
    END IF;

    RETURN QUERY SELECT st, bd, bu, bl, bc, NULL::text;
END
$fn$;

-- WindowChange::at for a policy change of budget p_budget at p_now to window p_spec (NULL: none)
-- with the bounds Rust computed for it (NULL when it could not). Returns
-- - 'done' when applied: the same window as before changes nothing; otherwise the counters stay
--   iff keeps_counters(old policy window, stored window), the stored window becomes p_spec's
--   bounds (or goes), and p_apply ran;
-- - 'check-old' (nothing applied) when the old policy's window would have to be computed at
--   p_now (its stored window is missing, other or passed) and p_old_checked is false: Rust
--   computes it (which may fail, as WindowChange::at does) and calls again with true;
-- - 'bounds' (nothing applied) when p_spec's bounds are needed but were not given.
-- The answer's second column is the old policy's window spec.
CREATE FUNCTION __SCHEMA__.change_window(p_budget text, p_spec text, p_start bigint, p_end bigint,
                                          p_now bigint, p_old_checked boolean)
RETURNS TABLE (status text, old_spec text) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    ospec text;
    sspec text;
    send bigint;
    keep boolean;
BEGIN
    SELECT p.window_spec INTO ospec FROM __SCHEMA__.policies p WHERE p.budget = p_budget;
    IF ospec IS NOT DISTINCT FROM p_spec THEN
        RETURN QUERY SELECT 'done'::text, ospec;
        RETURN;
    END IF;
    SELECT w.spec, w.end_ms INTO sspec, send FROM __SCHEMA__.windows w WHERE w.budget = p_budget;
    keep := __SCHEMA__.keeps_counters(ospec, sspec, send, p_now);
    IF ospec IS NOT NULL AND sspec IS NOT NULL AND NOT keep OR ospec IS NOT NULL AND sspec IS NULL THEN
        -- WindowStep::at(old, ..) rolls: it computes the old window's bounds at now.
        IF NOT p_old_checked THEN
            RETURN QUERY SELECT 'check-old'::text, ospec;
            RETURN;
        END IF;
    END IF;
    IF p_spec IS NOT NULL AND (p_start IS NULL OR p_end IS NULL) THEN
        RETURN QUERY SELECT 'bounds'::text, ospec;
        RETURN;
    END IF;
    IF NOT keep THEN
        DELETE FROM __SCHEMA__.counters WHERE budget = p_budget;
    END IF;
    IF p_spec IS NULL THEN
        DELETE FROM __SCHEMA__.windows WHERE budget = p_budget;
    ELSE
        INSERT INTO __SCHEMA__.windows AS w (budget, spec, start_ms, end_ms)
        VALUES (p_budget, p_spec, p_start, p_end)
        ON CONFLICT (budget) DO UPDATE SET
            spec = excluded.spec, start_ms = excluded.start_ms, end_ms = excluded.end_ms;
    END IF;
    RETURN QUERY SELECT 'done'::text, ospec;
END
$fn$;

-- Replaces the whole policy of a budget (limits and window), changing the stored window and the
-- counters as change_window says, in one step. Returns change_window's answer; on anything but
-- 'done' nothing was applied.
CREATE FUNCTION __SCHEMA__.set_policy(p_budget text, p_dims text[], p_softs bigint[], p_hards bigint[],
                                      p_spec text, p_start bigint, p_end bigint, p_now bigint,
                                      p_old_checked boolean)
RETURNS TABLE (status text, old_spec text) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    ch record;
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    SELECT * INTO ch FROM __SCHEMA__.change_window(p_budget, p_spec, p_start, p_end, p_now, p_old_checked);
    IF ch.status = 'done' THEN
        DELETE FROM __SCHEMA__.limits WHERE budget = p_budget;
        INSERT INTO __SCHEMA__.limits (budget, dimension, soft, hard)
             SELECT p_budget, u.dim, u.soft, u.hard FROM unnest(p_dims, p_softs, p_hards) AS u(dim, soft, hard);
        INSERT INTO __SCHEMA__.policies AS p (budget, window_spec) VALUES (p_budget, p_spec)
        ON CONFLICT (budget) DO UPDATE SET window_spec = excluded.window_spec;
    END IF;
    RETURN QUERY SELECT ch.status, ch.old_spec;
END
$fn$;

-- Removes a budget's policy (the window change as set_policy to no window). Returns
-- change_window's status ('done' applied) and whether a policy existed.
CREATE FUNCTION __SCHEMA__.delete_policy(p_budget text, p_now bigint, p_old_checked boolean)
RETURNS TABLE (status text, old_spec text, existed boolean) LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    ch record;
    gone boolean := false;
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    SELECT * INTO ch FROM __SCHEMA__.change_window(p_budget, NULL, NULL, NULL, p_now, p_old_checked);
    IF ch.status = 'done' THEN
        DELETE FROM __SCHEMA__.limits WHERE budget = p_budget;
        DELETE FROM __SCHEMA__.policies WHERE budget = p_budget;
        gone := FOUND;
    END IF;
    RETURN QUERY SELECT ch.status, ch.old_spec, gone;
END
$fn$;
