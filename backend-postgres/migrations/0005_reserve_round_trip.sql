-- stowage PostgreSQL schema, version 5: reserve and reserve_all in one round trip after a window
-- rollover (SEMANTICS §4.1, §4.2). A reserve writes no counters, so a rolled window's counters
-- simply count as zero and it needs no bounds; it asks for them (a 'window' row, nothing
-- written, as commit does) only when the caller says some window may fail to compute at now
-- (p_computable false: stowage_core::raw::bounds_always_computable), so that a window whose
-- bounds cannot be computed fails where WindowStep::at fails: the second call brings the spec
-- with NULL bounds and the reserve of that budget answers 'window-error' (d1: the spec) in its
-- place in the sequence. reserve, reserve_all and their steps gain p_computable and the bounds
-- (p_specs, p_starts, p_ends), so they are dropped and made again; report_usage_all keeps its
-- signature (its commit step needs the bounds, which it asks for first, and no longer asks again
-- for bounds brought as NULL) and calls the new steps.
-- commit and commit_all gain p_computable too: a commit of nothing (every reserved dimension
-- committed as 0) writes no counters and needs no bounds where no window can fail, but where
-- one may, it asks for them like any commit after a rollover, so that it fails where
-- WindowStep::at fails.

DROP FUNCTION __SCHEMA__.reserve(text, text, text[], bigint[], bigint, text, bigint, bigint);
DROP FUNCTION __SCHEMA__.reserve_all(text[], text, text[], bigint[], bigint, text, bigint, bigint);
DROP FUNCTION __SCHEMA__.reserve_all_steps(text[], text, text[], bigint[], bigint, text, bigint, bigint);
DROP FUNCTION __SCHEMA__.reserve_one(text, text, text[], bigint[], bigint, text, bigint, bigint);
DROP FUNCTION __SCHEMA__.commit(text, text, text[], bigint[], text, bigint, text[], bigint[], bigint[]);
DROP FUNCTION __SCHEMA__.commit_all(text[], text, text[], bigint[], text, bigint, text[], bigint[], bigint[]);
DROP FUNCTION __SCHEMA__.commit_all_steps(text[], text, text[], bigint[], text, bigint, text[], bigint[], bigint[]);
DROP FUNCTION __SCHEMA__.commit_one(text, text, text[], bigint[], text, bigint, text[], bigint[], bigint[]);

-- reserve on one budget, its lock held by the caller: check_reserve, then the window step (a roll
-- needs no bounds when p_computable; otherwise bounds given without values are 'window-error'),
-- admit (counters of the window containing now, plus pending), then the reservation is written,
-- held or refused.
CREATE FUNCTION __SCHEMA__.reserve_one(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                        p_ttl bigint, p_fp text, p_now bigint, p_remember bigint,
                                        p_computable boolean, p_specs text[], p_starts bigint[],
                                        p_ends bigint[])
RETURNS __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
DECLARE
    n int := cardinality(p_dims);
    r record;
    win record;
    a __SCHEMA__.res_reply := __SCHEMA__.reply('reserve', p_budget, 'reserved');
    cur bigint[];
    hards bigint[];
    held bigint[];
    expires bigint := __SCHEMA__.cap_add(p_now, p_ttl);
BEGIN
    SELECT * INTO r FROM __SCHEMA__.reservations x
     WHERE x.budget = p_budget AND x.id = p_id AND x.forget_at > p_now;
    IF FOUND THEN
        IF r.fingerprint <> p_fp THEN
            RETURN __SCHEMA__.reply('reserve', p_budget, 'conflict');
        END IF;
        a.expires_at := r.expires_at;
        IF r.state = 'refused' THEN
            a.status := 'replay-hard';
            a.b_dims := r.b_dims; a.b_usage := r.b_usage; a.b_limits := r.b_limits;
            a.b_crossed := r.b_crossed; a.b_pending := r.b_pending;
        ELSE
            a.status := 'replay-reserved';
        END IF;
        RETURN a;
    END IF;
    SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, p_specs, p_starts, p_ends);
    IF win.need IS NOT NULL AND NOT p_computable THEN
        -- The bounds were asked for first (reserve_needs) and came without bounds: computing
        -- them failed, and this is where WindowStep::at fails.
        a := __SCHEMA__.reply('reserve', p_budget, 'window-error');
        a.d1 := win.need;
        RETURN a;
    END IF;
    SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord), array_agg(l.hard ORDER BY u.ord)
      INTO cur, hards
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      LEFT JOIN __SCHEMA__.counters c ON win.keep AND c.budget = p_budget AND c.dimension = u.dim
      LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;
    held := __SCHEMA__.pending_for(p_budget, p_dims, p_now);
    a.b_dims := '{}'; a.b_usage := '{}'; a.b_limits := '{}'; a.b_crossed := '{}'; a.b_pending := '{}';
    FOR i IN 1..n LOOP
        IF cur[i]::numeric + held[i] + p_amounts[i] > 9223372036854775807 THEN
            a.status := 'overflow';
            a.d1 := p_dims[i]; a.d2 := cur[i] || ' + pending ' || held[i]; a.d3 := p_amounts[i]::text;
            a.b_dims := NULL; a.b_usage := NULL; a.b_limits := NULL; a.b_crossed := NULL; a.b_pending := NULL;
            RETURN a;
        END IF;
        IF hards[i] IS NOT NULL AND cur[i]::numeric + held[i] + p_amounts[i] > hards[i] THEN
            a.status := 'hard';
            a.b_dims := a.b_dims || p_dims[i]; a.b_usage := a.b_usage || cur[i];
            a.b_limits := a.b_limits || hards[i];
            a.b_crossed := a.b_crossed || (cur[i]::numeric + held[i] <= hards[i]);
            a.b_pending := a.b_pending || held[i];
        END IF;
    END LOOP;
    a.expires_at := expires;
    INSERT INTO __SCHEMA__.reservations AS x
           (budget, id, fingerprint, dims, amounts, ttl_ms, expires_at, remember_ms, forget_at, state,
            resolved_at, actual_fp, actual_dims, actual_amounts, outcome,
            b_dims, b_usage, b_limits, b_crossed, b_pending)
    VALUES (p_budget, p_id, p_fp, p_dims, p_amounts, p_ttl, expires, p_remember,
            __SCHEMA__.cap_add(CASE WHEN a.status = 'hard' THEN p_now ELSE expires END, p_remember),
            CASE WHEN a.status = 'hard' THEN 'refused' ELSE 'held' END,
            CASE WHEN a.status = 'hard' THEN p_now END, NULL, NULL, NULL, NULL,
            CASE WHEN a.status = 'hard' THEN a.b_dims END, CASE WHEN a.status = 'hard' THEN a.b_usage END,
            CASE WHEN a.status = 'hard' THEN a.b_limits END, CASE WHEN a.status = 'hard' THEN a.b_crossed END,
            CASE WHEN a.status = 'hard' THEN a.b_pending END)
    ON CONFLICT (budget, id) DO UPDATE SET
        fingerprint = excluded.fingerprint, dims = excluded.dims, amounts = excluded.amounts,
        ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at, remember_ms = excluded.remember_ms,
        forget_at = excluded.forget_at, state = excluded.state, resolved_at = excluded.resolved_at,
        actual_fp = NULL, actual_dims = NULL, actual_amounts = NULL, outcome = NULL,
        b_dims = excluded.b_dims, b_usage = excluded.b_usage, b_limits = excluded.b_limits,
        b_crossed = excluded.b_crossed, b_pending = excluded.b_pending;
    -- Keep the table bounded: remove a few reservations of the namespace whose id is forgotten
    -- (the oldest first, by reservations_by_forget). Rows another transaction has locked are
    -- skipped, so no lock is ever waited for out of order.
    WITH forgotten AS (
        SELECT x.ctid FROM __SCHEMA__.reservations x
         WHERE x.forget_at <= p_now
         ORDER BY x.forget_at
         LIMIT 8 FOR UPDATE SKIP LOCKED)
    DELETE FROM __SCHEMA__.reservations x USING forgotten f WHERE x.ctid = f.ctid;
    IF a.status = 'reserved' THEN
        a.b_dims := NULL; a.b_usage := NULL; a.b_limits := NULL; a.b_crossed := NULL; a.b_pending := NULL;
    END IF;
    RETURN a;
END
$fn$;

-- The budgets of p_budgets whose reserve at p_now would roll their window to a spec not among
-- p_specs: one 'window' row each (d1: the spec, each spec once). Read-only: asked before
-- anything is written, when some window may fail to compute at now.
CREATE FUNCTION __SCHEMA__.reserve_needs(p_budgets text[], p_now bigint, p_specs text[])
RETURNS __SCHEMA__.res_reply[] LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    acc __SCHEMA__.res_reply[] := '{}';
    a __SCHEMA__.res_reply;
    need text;
    needs text[] := '{}';
BEGIN
    FOR k IN 1..cardinality(p_budgets) LOOP
        SELECT w.need INTO need FROM __SCHEMA__.window_at(p_budgets[k], p_now, NULL, NULL, NULL) w;
        IF need IS NOT NULL AND array_position(p_specs, need) IS NULL
           AND array_position(needs, need) IS NULL THEN
            needs := needs || need;
            a := __SCHEMA__.reply('window', p_budgets[k], 'window');
            a.d1 := need;
            acc := acc || a;
        END IF;
    END LOOP;
    RETURN acc;
END
$fn$;

-- stowage_core::raw::reserve_all, locks held: reserve on every budget; if any answered an error
-- or refused, release the holds this call created. Rows: every 'reserve', then the 'release's.
CREATE FUNCTION __SCHEMA__.reserve_all_steps(p_budgets text[], p_id text, p_dims text[],
                                              p_amounts bigint[], p_ttl bigint, p_fp text,
                                              p_now bigint, p_remember bigint, p_computable boolean,
                                              p_specs text[], p_starts bigint[], p_ends bigint[])
RETURNS __SCHEMA__.res_reply[] LANGUAGE plpgsql AS $fn$
DECLARE
    acc __SCHEMA__.res_reply[] := '{}';
    failed boolean := false;
    a __SCHEMA__.res_reply;
BEGIN
    FOR k IN 1..cardinality(p_budgets) LOOP
        a := __SCHEMA__.reserve_one(p_budgets[k], p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember,
                                    p_computable, p_specs, p_starts, p_ends);
        failed := failed OR a.status NOT IN ('reserved', 'replay-reserved');
        acc := acc || a;
    END LOOP;
    IF failed THEN
        FOR k IN 1..cardinality(p_budgets) LOOP
            IF acc[k].status = 'reserved' THEN
                acc := acc || __SCHEMA__.release_one(p_budgets[k], p_id, p_now);
            END IF;
        END LOOP;
    END IF;
    RETURN acc;
END
$fn$;

CREATE FUNCTION __SCHEMA__.reserve(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                    p_ttl bigint, p_fp text, p_now bigint, p_remember bigint,
                                    p_computable boolean, p_specs text[], p_starts bigint[],
                                    p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    IF NOT p_computable THEN
        RETURN QUERY SELECT * FROM unnest(__SCHEMA__.reserve_needs(ARRAY[p_budget], p_now, p_specs));
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN NEXT __SCHEMA__.reserve_one(p_budget, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember,
                                       p_computable, p_specs, p_starts, p_ends);
END
$fn$;

CREATE FUNCTION __SCHEMA__.reserve_all(p_budgets text[], p_id text, p_dims text[], p_amounts bigint[],
                                        p_ttl bigint, p_fp text, p_now bigint, p_remember bigint,
                                        p_computable boolean, p_specs text[], p_starts bigint[],
                                        p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    IF NOT p_computable THEN
        RETURN QUERY SELECT * FROM unnest(__SCHEMA__.reserve_needs(p_budgets, p_now, p_specs));
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT * FROM unnest(__SCHEMA__.reserve_all_steps(
        p_budgets, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember, p_computable, p_specs,
        p_starts, p_ends));
END
$fn$;

-- commit on one budget, its lock held by the caller: as in version 4, except that a commit of
-- nothing asks for a rolled window's bounds too when not p_computable (and writes nothing).
CREATE FUNCTION __SCHEMA__.commit_one(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                       p_fp text, p_now bigint, p_computable boolean, p_specs text[],
                                       p_starts bigint[], p_ends bigint[])
RETURNS __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
DECLARE
    n int := cardinality(p_dims);
    a __SCHEMA__.res_reply;
    win record;
    cur bigint[];
    softs bigint[];
    nxt bigint[] := '{}';
BEGIN
    a := __SCHEMA__.check_one(p_budget, p_id, p_dims, p_amounts, p_fp, p_now);
    a.step := 'commit';
    IF a.status <> 'apply' THEN
        RETURN a;
    END IF;
    a.status := 'ok';
    a.b_dims := '{}'; a.b_usage := '{}'; a.b_limits := '{}'; a.b_crossed := '{}'; a.b_pending := '{}';
    IF n > 0 OR NOT p_computable THEN
        SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, p_specs, p_starts, p_ends);
        IF win.need IS NOT NULL THEN
            a := __SCHEMA__.reply('window', p_budget, 'window');
            a.d1 := win.need;
            RETURN a;
        END IF;
    END IF;
    IF n > 0 THEN
        SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord), array_agg(l.soft ORDER BY u.ord)
          INTO cur, softs
          FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
          LEFT JOIN __SCHEMA__.counters c ON win.keep AND c.budget = p_budget AND c.dimension = u.dim
          LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;
        FOR i IN 1..n LOOP
            IF cur[i]::numeric + p_amounts[i] > 9223372036854775807 THEN
                a.status := 'corrupt';
                a.d1 := 'counter ' || p_dims[i] || ' plus a committed amount above MAX_AMOUNT';
                RETURN a;
            END IF;
            nxt := nxt || (cur[i] + p_amounts[i]);
            IF softs[i] IS NOT NULL AND nxt[i] > softs[i] THEN
                a.status := 'soft';
                a.b_dims := a.b_dims || p_dims[i]; a.b_usage := a.b_usage || nxt[i];
                a.b_limits := a.b_limits || softs[i]; a.b_crossed := a.b_crossed || (cur[i] <= softs[i]);
                a.b_pending := a.b_pending || 0::bigint;
            END IF;
        END LOOP;
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
    END IF;
    UPDATE __SCHEMA__.reservations x SET
        state = 'committed', resolved_at = p_now, forget_at = __SCHEMA__.cap_add(p_now, x.remember_ms),
        actual_fp = p_fp, actual_dims = p_dims, actual_amounts = p_amounts, outcome = a.status,
        b_dims = a.b_dims, b_usage = a.b_usage, b_limits = a.b_limits, b_crossed = a.b_crossed,
        b_pending = a.b_pending
     WHERE x.budget = p_budget AND x.id = p_id;
    RETURN a;
END
$fn$;

-- stowage_core::raw::commit_all, locks held: as in version 4, with commit_one's p_computable.
CREATE FUNCTION __SCHEMA__.commit_all_steps(p_budgets text[], p_id text, p_dims text[],
                                             p_amounts bigint[], p_fp text, p_now bigint,
                                             p_computable boolean, p_specs text[], p_starts bigint[],
                                             p_ends bigint[])
RETURNS __SCHEMA__.res_reply[] LANGUAGE plpgsql AS $fn$
DECLARE
    acc __SCHEMA__.res_reply[] := '{}';
    a __SCHEMA__.res_reply;
    applies boolean[] := '{}';
    need text;
    needs text[] := '{}';
BEGIN
    FOR k IN 1..cardinality(p_budgets) LOOP
        a := __SCHEMA__.check_one(p_budgets[k], p_id, p_dims, p_amounts, p_fp, p_now);
        IF a.status NOT IN ('apply', 'replay-ok', 'replay-soft') THEN
            RETURN ARRAY[a];
        END IF;
        applies := applies || (a.status = 'apply');
    END LOOP;
    IF cardinality(p_dims) > 0 OR NOT p_computable THEN
        FOR k IN 1..cardinality(p_budgets) LOOP
            IF applies[k] THEN
                SELECT w.need INTO need
                  FROM __SCHEMA__.window_at(p_budgets[k], p_now, p_specs, p_starts, p_ends) w;
                IF need IS NOT NULL AND array_position(needs, need) IS NULL THEN
                    needs := needs || need;
                    a := __SCHEMA__.reply('window', p_budgets[k], 'window');
                    a.d1 := need;
                    acc := acc || a;
                END IF;
            END IF;
        END LOOP;
        IF cardinality(acc) > 0 THEN
            RETURN acc;
        END IF;
    END IF;
    FOR k IN 1..cardinality(p_budgets) LOOP
        acc := acc || __SCHEMA__.commit_one(p_budgets[k], p_id, p_dims, p_amounts, p_fp, p_now,
                                            p_computable, p_specs, p_starts, p_ends);
    END LOOP;
    RETURN acc;
END
$fn$;

CREATE FUNCTION __SCHEMA__.commit(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                   p_fp text, p_now bigint, p_computable boolean, p_specs text[],
                                   p_starts bigint[], p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    RETURN NEXT __SCHEMA__.commit_one(p_budget, p_id, p_dims, p_amounts, p_fp, p_now, p_computable, p_specs,
                                      p_starts, p_ends);
END
$fn$;

CREATE FUNCTION __SCHEMA__.commit_all(p_budgets text[], p_id text, p_dims text[], p_amounts bigint[],
                                       p_fp text, p_now bigint, p_computable boolean, p_specs text[],
                                       p_starts bigint[], p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    RETURN QUERY SELECT * FROM unnest(__SCHEMA__.commit_all_steps(
        p_budgets, p_id, p_dims, p_amounts, p_fp, p_now, p_computable, p_specs, p_starts, p_ends));
END
$fn$;

-- stowage_core::raw::report_usage_all: as in version 4 (the rollovers are answered first, 'window'
-- rows, nothing applied; then reserve_all with the key as id, then, if held everywhere,
-- commit_all), except that a spec brought with NULL bounds (they cannot be computed) is not asked
-- for again: the reserve of its budget answers 'window-error' in its place in the sequence.
CREATE OR REPLACE FUNCTION __SCHEMA__.report_usage_all(p_budgets text[], p_id text, p_dims text[],
                                             p_amounts bigint[], p_ttl bigint, p_fp text,
                                             p_now bigint, p_remember bigint, p_commit_fp text,
                                             p_specs text[], p_starts bigint[], p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
DECLARE
    acc __SCHEMA__.res_reply[] := '{}';
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    RETURN QUERY SELECT * FROM unnest(__SCHEMA__.reserve_needs(p_budgets, p_now, p_specs));
    IF FOUND THEN
        RETURN;
    END IF;
    acc := __SCHEMA__.reserve_all_steps(p_budgets, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember,
                                        false, p_specs, p_starts, p_ends);
    RETURN QUERY SELECT * FROM unnest(acc);
    IF cardinality(acc) = cardinality(p_budgets)
       AND NOT EXISTS (SELECT 1 FROM unnest(acc) o WHERE o.status NOT IN ('reserved', 'replay-reserved')) THEN
        RETURN QUERY SELECT * FROM unnest(__SCHEMA__.commit_all_steps(
            p_budgets, p_id, p_dims, p_amounts, p_commit_fp, p_now, true, p_specs, p_starts, p_ends));
    END IF;
END
$fn$;
