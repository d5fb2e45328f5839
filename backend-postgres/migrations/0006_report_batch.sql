-- stowage PostgreSQL schema, version 6: report_usage_batch (SEMANTICS §4.4) in one call.
-- The body of report_usage (version 4) moves into report_step (unchanged but for skipping
-- pending_for where no hold is live), which both the single
-- report and every item of a batch run: the two cannot diverge. report_step takes no lock (its
-- caller holds the budget's) and collects no expired dedup records (its caller does, once per call),
-- and it takes the window bounds the call brought as arrays (spec i has bounds starts[i], ends[i];
-- NULL bounds: brought, but they could not be computed), as window_at does.
-- report_usage keeps its signature and its answer: processes of the previous build call it the
-- same way.

CREATE TYPE __SCHEMA__.report_reply AS (
    status text, b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[],
    b_pending bigint[], spec text);

-- SEMANTICS §3 steps 2-6 with §4.2's holds and the lazy window rollover (version 4's report_usage),
-- the budget's lock held by the caller. Status: ok | soft | hard | replay-ok | replay-soft |
-- replay-hard | conflict | overflow | window (nothing applied, nothing recorded; spec names the
-- policy's window, whose bounds at p_now the call did not bring or brought as NULL).
CREATE FUNCTION __SCHEMA__.report_step(
    p_budget text, p_dims text[], p_deltas bigint[], p_key text, p_fingerprint text,
    p_now bigint, p_ttl bigint, p_specs text[], p_starts bigint[], p_ends bigint[])
RETURNS __SCHEMA__.report_reply
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n int := cardinality(p_dims);
    cur bigint[];
    held bigint[];
    softs bigint[];
    hards bigint[];
    nxt bigint[] := '{}';
    rec record;
    win record;
    r __SCHEMA__.report_reply;
    st text := 'ok';
    bd text[] := '{}';
    bu bigint[] := '{}';
    bl bigint[] := '{}';
    bc boolean[] := '{}';
    bp bigint[] := '{}';
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT d.fingerprint, d.expires_at, d.status, d.b_dims, d.b_usage, d.b_limits, d.b_crossed, d.b_pending
          INTO rec FROM __SCHEMA__.dedup d WHERE d.budget = p_budget AND d.dedup_key = p_key;
        IF FOUND AND p_now < rec.expires_at THEN
            IF rec.fingerprint <> p_fingerprint THEN
                r.status := 'conflict';
            ELSE
                r := ROW('replay-' || rec.status, rec.b_dims, rec.b_usage, rec.b_limits,
                         rec.b_crossed, rec.b_pending, NULL);
            END IF;
            RETURN r;
        END IF;
    END IF;

    SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, p_specs, p_starts, p_ends);
    IF win.need IS NOT NULL THEN
        r.status := 'window';
        r.spec := win.need;
        RETURN r;
    END IF;

    SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord),
           array_agg(l.soft ORDER BY u.ord),
           array_agg(l.hard ORDER BY u.ord)
      INTO cur, softs, hards
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      LEFT JOIN __SCHEMA__.counters c ON win.keep AND c.budget = p_budget AND c.dimension = u.dim
      LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;
    -- pending_for (an SQL function, planned at every call) only where a hold may count: else 0s.
    IF EXISTS (SELECT 1 FROM __SCHEMA__.reservations x
                WHERE x.budget = p_budget AND x.state = 'held' AND x.expires_at > p_now) THEN
        held := __SCHEMA__.pending_for(p_budget, p_dims, p_now);
    ELSE
        held := array_fill(0::bigint, ARRAY[n]);
    END IF;

    FOR i IN 1..n LOOP
        IF cur[i]::numeric + held[i] + p_deltas[i] > 9223372036854775807 THEN
            RETURN ROW('overflow', ARRAY[p_dims[i]], ARRAY[cur[i]], ARRAY[p_deltas[i]],
                       NULL, ARRAY[held[i]], NULL)::__SCHEMA__.report_reply;
        END IF;
        nxt := nxt || (cur[i] + p_deltas[i]);
    END LOOP;

    FOR i IN 1..n LOOP
        IF hards[i] IS NOT NULL AND nxt[i]::numeric + held[i] > hards[i] THEN
            st := 'hard';
            bd := bd || p_dims[i]; bu := bu || cur[i]; bl := bl || hards[i];
            bc := bc || (cur[i]::numeric + held[i] <= hards[i]); bp := bp || held[i];
        END IF;
    END LOOP;

    IF st = 'ok' THEN
        IF win.roll THEN
            IF NOT win.keep THEN
                DELETE FROM __SCHEMA__.counters WHERE budget = p_budget;
            END IF;
            INSERT INTO __SCHEMA__.windows AS w (budget, spec, start_ms, end_ms)
            VALUES (p_budget, win.wspec, win.wstart, win.wend)
            ON CONFLICT (budget) DO UPDATE SET
                spec = excluded.spec, start_ms = excluded.start_ms, end_ms = excluded.end_ms;
        END IF;
        INSERT INTO __SCHEMA__.counters AS c (budget, dimension, value)
             SELECT p_budget, u.dim, u.v FROM unnest(p_dims, nxt) AS u(dim, v)
        ON CONFLICT (budget, dimension) DO UPDATE SET value = excluded.value;
        FOR i IN 1..n LOOP
            IF softs[i] IS NOT NULL AND nxt[i] > softs[i] THEN
                st := 'soft';
                bd := bd || p_dims[i]; bu := bu || nxt[i]; bl := bl || softs[i];
                bc := bc || (cur[i] <= softs[i]); bp := bp || 0::bigint;
            END IF;
        END LOOP;
    END IF;

    IF p_key IS NOT NULL THEN
        INSERT INTO __SCHEMA__.dedup AS d
               (budget, dedup_key, fingerprint, written_at, expires_at, status, b_dims, b_usage, b_limits,
                b_crossed, b_pending)
        VALUES (p_budget, p_key, p_fingerprint, p_now, __SCHEMA__.cap_add(p_now, p_ttl),
                st, bd, bu, bl, bc, bp)
        ON CONFLICT (budget, dedup_key) DO UPDATE SET
            fingerprint = excluded.fingerprint, written_at = excluded.written_at,
            expires_at = excluded.expires_at, status = excluded.status,
            b_dims = excluded.b_dims, b_usage = excluded.b_usage, b_limits = excluded.b_limits,
            b_crossed = excluded.b_crossed, b_pending = excluded.b_pending;
    END IF;

    RETURN ROW(st, bd, bu, bl, bc, bp, NULL)::__SCHEMA__.report_reply;
END
$fn$;

-- Keeps the dedup table bounded: removes up to p_limit records whose own expiry has passed, oldest
-- first (see version 2). SKIP LOCKED never waits for (or deadlocks with) a report rewriting one of
-- them; every caller runs it last, after its last wait for a lock.
CREATE FUNCTION __SCHEMA__.collect_dedup(p_now bigint, p_limit bigint)
RETURNS void LANGUAGE sql AS $fn$
    WITH expired AS (
        SELECT x.ctid FROM __SCHEMA__.dedup x
         WHERE x.expires_at <= p_now
         ORDER BY x.expires_at
         LIMIT p_limit FOR UPDATE SKIP LOCKED)
    DELETE FROM __SCHEMA__.dedup d USING expired e WHERE d.ctid = e.ctid
$fn$;

-- One report: the budget's lock, report_step with the bounds brought for p_spec, and, after a
-- record was written, a few expired records collected. The same answer as in version 4.
CREATE OR REPLACE FUNCTION __SCHEMA__.report_usage(
    p_budget text, p_dims text[], p_deltas bigint[], p_key text, p_fingerprint text,
    p_now bigint, p_ttl bigint, p_spec text, p_start bigint, p_end bigint)
RETURNS TABLE (status text, b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[],
               b_pending bigint[], spec text)
LANGUAGE plpgsql AS $fn$
DECLARE
    r __SCHEMA__.report_reply;
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    r := __SCHEMA__.report_step(p_budget, p_dims, p_deltas, p_key, p_fingerprint, p_now, p_ttl,
                                ARRAY[p_spec], ARRAY[p_start], ARRAY[p_end]);
    IF p_key IS NOT NULL AND r.status IN ('ok', 'soft', 'hard') THEN
        PERFORM __SCHEMA__.collect_dedup(p_now, 8);
    END IF;
    RETURN QUERY SELECT r.status, r.b_dims, r.b_usage, r.b_limits, r.b_crossed, r.b_pending, r.spec;
END
$fn$;

-- SEMANTICS §4.4: the items (budget i with dimensions p_dims/p_deltas[from i .. from i + count i - 1],
-- key i, fingerprint i; the items' dimensions concatenated in item order) reported in order, in one
-- transaction, each by report_step: one answer row per item, in order. The budgets are locked
-- first, in name order (byte order), as the calls over several budgets do: no deadlock with them
-- or with another batch. An item whose budget's window needs bounds the call did not bring answers
-- 'window' (spec: the window) and so does every later item of that budget, unapplied: the caller
-- repeats them in order with the bounds. Bounds brought as NULL skip nothing (such an item can never
-- apply: the later ones do not depend on it). One collection of expired records at the end, up to
-- 8 per record written, as many as the reports one by one would remove.
CREATE FUNCTION __SCHEMA__.report_usage_batch(
    p_budgets text[], p_counts int[], p_dims text[], p_deltas bigint[], p_keys text[], p_fps text[],
    p_now bigint, p_ttl bigint, p_specs text[], p_starts bigint[], p_ends bigint[])
RETURNS SETOF __SCHEMA__.report_reply
LANGUAGE plpgsql AS $fn$
DECLARE
    r __SCHEMA__.report_reply;
    waiting text[] := '{}';
    waiting_specs text[] := '{}';
    w int;
    at int := 1;
    dims text[];
    deltas bigint[];
    written bigint := 0;
BEGIN
    PERFORM __SCHEMA__.lock_all(ARRAY(SELECT DISTINCT b COLLATE "C" FROM unnest(p_budgets) AS u(b) ORDER BY 1));
    FOR i IN 1..cardinality(p_budgets) LOOP
        dims := '{}';
        deltas := '{}';
        FOR j IN at..at + p_counts[i] - 1 LOOP
            dims := dims || p_dims[j];
            deltas := deltas || p_deltas[j];
        END LOOP;
        at := at + p_counts[i];
        w := array_position(waiting, p_budgets[i]);
        IF w IS NOT NULL THEN
            r := ROW('window', NULL, NULL, NULL, NULL, NULL, waiting_specs[w]);
        ELSE
            r := __SCHEMA__.report_step(p_budgets[i], dims, deltas, p_keys[i], p_fps[i], p_now, p_ttl,
                                        p_specs, p_starts, p_ends);
            IF r.status = 'window' AND array_position(p_specs, r.spec) IS NULL THEN
                waiting := waiting || p_budgets[i];
                waiting_specs := waiting_specs || r.spec;
            ELSIF p_keys[i] IS NOT NULL AND r.status IN ('ok', 'soft', 'hard') THEN
                written := written + 1;
            END IF;
        END IF;
        RETURN NEXT r;
    END LOOP;
    IF written > 0 THEN
        PERFORM __SCHEMA__.collect_dedup(p_now, 8 * written);
    END IF;
END
$fn$;
