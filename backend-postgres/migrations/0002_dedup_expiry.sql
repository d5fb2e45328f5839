-- stowage PostgreSQL schema, version 2: dedup records carry the expiry their writer gave them.
-- Version 1 decided liveness and garbage collection with the *calling* handle's TTL, so a handle
-- with a short TTL deleted (and ignored) records another handle had written with a long one.
-- A record written at t by a handle with TTL ttl expires at min(t + ttl, MAX_AMOUNT)
-- (stowage_core::dedup_expiry), is live while now < expires_at, and may be collected once
-- expires_at <= now. p_ttl keeps its place in report_usage's signature (processes still running
-- the previous build call it the same way) and now only computes the expiry of the records written.

ALTER TABLE __SCHEMA__.dedup ADD COLUMN expires_at bigint;
-- Records written before this version get the default TTL of 24 h, capped at MAX_AMOUNT: the
-- backfill rule every backend uses.
UPDATE __SCHEMA__.dedup
   SET expires_at = CASE WHEN written_at >= 9223372036854775807 - 86400000 THEN 9223372036854775807
                         ELSE written_at + 86400000 END;
ALTER TABLE __SCHEMA__.dedup ALTER COLUMN expires_at SET NOT NULL;
DROP INDEX __SCHEMA__.dedup_by_time;
CREATE INDEX dedup_by_expiry ON __SCHEMA__.dedup (expires_at);

-- SEMANTICS §3 steps 2-6 in one call, as in version 1 except that dedup liveness and garbage
-- collection go by expires_at. p_dims is sorted by the caller (byte order) and unique.
-- Returns status: ok | soft | hard | replay-ok | replay-soft | replay-hard | conflict | overflow,
-- and the breaches (for overflow: the dimension, its counter and the delta).
CREATE OR REPLACE FUNCTION __SCHEMA__.report_usage(
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
        SELECT d.fingerprint, d.expires_at, d.status, d.b_dims, d.b_usage, d.b_limits, d.b_crossed
          INTO rec FROM __SCHEMA__.dedup d WHERE d.budget = p_budget AND d.dedup_key = p_key;
        -- Live while now < the expiry its writer gave it, whatever this caller's TTL is.
        IF FOUND AND p_now < rec.expires_at THEN
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
        -- Keep the table bounded: remove a few records whose own expiry has passed (earliest
        -- first) on the side. ORDER BY makes even the cached generic plan walk dedup_by_expiry
        -- instead of scanning the table; SKIP LOCKED never waits for (or deadlocks with) a report
        -- rewriting one of them.
        WITH expired AS (
            SELECT x.ctid FROM __SCHEMA__.dedup x
             WHERE x.expires_at <= p_now
             ORDER BY x.expires_at
             LIMIT 8 FOR UPDATE SKIP LOCKED)
        DELETE FROM __SCHEMA__.dedup d USING expired e WHERE d.ctid = e.ctid;
    END IF;

    RETURN QUERY SELECT st, bd, bu, bl, bc;
END
$fn$;
