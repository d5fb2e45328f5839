-- stowage PostgreSQL schema, version 4: reservations (SEMANTICS §4.2) and several budgets (§4.3).
-- A reservation row is stowage_core::Reservation in canonical form: its dimensions and amounts,
-- TTL, expiry, how long its id is remembered after it ended (remember_ms), its state and, once
-- resolved, when (resolved_at), the commit's actual amounts and outcome, or the refusal's
-- breaches. Expiry is never written: a hold whose expires_at <= now stays 'held' and simply stops
-- counting. forget_at (min(ended_at + remember_ms, MAX_AMOUNT), ended_at = resolved_at or
-- expires_at) is kept with the row: a row is invisible once forget_at <= now, and a few such rows
-- of the namespace are removed by each reserve.
-- report_usage's answer gains the pending amount of each hard breach, so it is dropped and made
-- again; the functions of this version answer in the grammar of stowage_core::raw::
-- ReservationReply, one row (res_reply) per step of the sequence.

CREATE TABLE __SCHEMA__.reservations (
    budget         text COLLATE "C" NOT NULL,
    id             text COLLATE "C" NOT NULL,
    -- stowage_core::raw::reserve_fingerprint of the request (dimensions, amounts, TTL).
    fingerprint    text NOT NULL,
    dims           text[] NOT NULL,
    amounts        bigint[] NOT NULL,
    ttl_ms         bigint NOT NULL CHECK (ttl_ms >= 0),
    expires_at     bigint NOT NULL CHECK (expires_at >= 0),
    remember_ms    bigint NOT NULL CHECK (remember_ms >= 0),
    forget_at      bigint NOT NULL,
    state          text NOT NULL CHECK (state IN ('held', 'refused', 'committed', 'released')),
    resolved_at    bigint,
    -- Committed: stowage_core::raw::commit_fingerprint of actual, actual itself, 'ok' | 'soft'.
    actual_fp      text,
    actual_dims    text[],
    actual_amounts bigint[],
    outcome        text,
    -- Refused: the hard breaches; committed with 'soft': the soft breaches.
    b_dims         text[],
    b_usage        bigint[],
    b_limits       bigint[],
    b_crossed      boolean[],
    b_pending      bigint[],
    PRIMARY KEY (budget, id)
);
-- pending: the holds of a budget that count at now.
CREATE INDEX reservations_holding ON __SCHEMA__.reservations (budget, expires_at) WHERE state = 'held';
-- Forgotten ids, oldest first, for the clean-up of every reserve. Not led by budget: an index led
-- by budget can serve `budget = $1` alone, and a plan made before the table has statistics then
-- finds a reservation by id by scanning every remembered reservation of its budget (seen: 2 → 6 ms
-- per reserve + commit over 4,000 calls) instead of by the primary key.
CREATE INDEX reservations_by_forget ON __SCHEMA__.reservations (forget_at);

-- One step's answer: step is 'reserve', 'release', 'check', 'commit' or 'window' (then d1 is the
-- spec of a window whose bounds at now are needed); status and the rest as ReservationReply.
CREATE TYPE __SCHEMA__.res_reply AS (
    step text, budget text, status text,
    b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[], b_pending bigint[],
    expires_at bigint, d1 text, d2 text, d3 text);

-- Dedup records written before this version have no pending amounts: 0 per breach.
ALTER TABLE __SCHEMA__.dedup ADD COLUMN b_pending bigint[];
UPDATE __SCHEMA__.dedup SET b_pending = array_fill(0::bigint, ARRAY[cardinality(b_dims)])
 WHERE b_dims IS NOT NULL;

DROP FUNCTION __SCHEMA__.report_usage(text, text[], bigint[], text, text, bigint, bigint, text, bigint, bigint);

-- min(a + b, MAX_AMOUNT) for a, b in 0..=MAX_AMOUNT, compared before adding.
CREATE FUNCTION __SCHEMA__.cap_add(a bigint, b bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE WHEN b >= 9223372036854775807 - a THEN 9223372036854775807 ELSE a + b END
$fn$;

-- What budget p_budget holds at p_now, per dimension of p_dims (0 where nothing): pending_of.
CREATE FUNCTION __SCHEMA__.pending_for(p_budget text, p_dims text[], p_now bigint)
RETURNS bigint[] LANGUAGE sql STABLE AS $fn$
    SELECT COALESCE(array_agg(COALESCE(s.total, 0) ORDER BY u.ord), '{}')
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      LEFT JOIN (SELECT x.dim, sum(x.amount)::bigint AS total
                   FROM __SCHEMA__.reservations r, unnest(r.dims, r.amounts) AS x(dim, amount)
                  WHERE r.budget = p_budget AND r.state = 'held' AND r.expires_at > p_now
                  GROUP BY x.dim) s ON s.dim = u.dim
$fn$;

-- WindowStep::at for budget p_budget at p_now: roll (the stored window passed, is another or is
-- missing), keep (the stored counters count), the policy's window spec, and its bounds when they
-- are among p_specs/p_starts/p_ends; need is the spec when a roll needs bounds not given.
CREATE FUNCTION __SCHEMA__.window_at(p_budget text, p_now bigint, p_specs text[], p_starts bigint[],
                                      p_ends bigint[], OUT roll boolean, OUT keep boolean,
                                      OUT wspec text, OUT wstart bigint, OUT wend bigint, OUT need text)
LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    sspec text;
    send bigint;
    i int;
BEGIN
    roll := false;
    keep := true;
    SELECT p.window_spec INTO wspec FROM __SCHEMA__.policies p WHERE p.budget = p_budget;
    IF wspec IS NOT NULL THEN
        SELECT w.spec, w.end_ms INTO sspec, send FROM __SCHEMA__.windows w WHERE w.budget = p_budget;
        IF sspec IS NULL OR sspec <> wspec OR NOT __SCHEMA__.keeps_counters(wspec, sspec, send, p_now) THEN
            roll := true;
            keep := sspec IS NULL;
            i := array_position(p_specs, wspec);
            IF i IS NULL OR p_starts[i] IS NULL OR p_ends[i] IS NULL THEN
                need := wspec;
            ELSE
                wstart := p_starts[i];
                wend := p_ends[i];
            END IF;
        END IF;
    END IF;
END
$fn$;

-- SEMANTICS §3 steps 2-6 with §4.2's holds and the lazy window rollover, in one call. As in
-- version 3, except that hard limits and overflow count what live reservations hold (admit), and
-- each hard breach carries that amount (b_pending).
CREATE FUNCTION __SCHEMA__.report_usage(
    p_budget text, p_dims text[], p_deltas bigint[], p_key text, p_fingerprint text,
    p_now bigint, p_ttl bigint, p_spec text, p_start bigint, p_end bigint)
RETURNS TABLE (status text, b_dims text[], b_usage bigint[], b_limits bigint[], b_crossed boolean[],
               b_pending bigint[], spec text)
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
    st text := 'ok';
    bd text[] := '{}';
    bu bigint[] := '{}';
    bl bigint[] := '{}';
    bc boolean[] := '{}';
    bp bigint[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    IF p_key IS NOT NULL THEN
        SELECT d.fingerprint, d.expires_at, d.status, d.b_dims, d.b_usage, d.b_limits, d.b_crossed, d.b_pending
          INTO rec FROM __SCHEMA__.dedup d WHERE d.budget = p_budget AND d.dedup_key = p_key;
        IF FOUND AND p_now < rec.expires_at THEN
            IF rec.fingerprint <> p_fingerprint THEN
                RETURN QUERY SELECT 'conflict'::text, NULL::text[], NULL::bigint[], NULL::bigint[],
                                    NULL::boolean[], NULL::bigint[], NULL::text;
            ELSE
                RETURN QUERY SELECT 'replay-' || rec.status, rec.b_dims, rec.b_usage, rec.b_limits,
                                    rec.b_crossed, rec.b_pending, NULL::text;
            END IF;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, ARRAY[p_spec], ARRAY[p_start], ARRAY[p_end]);
    IF win.need IS NOT NULL THEN
        RETURN QUERY SELECT 'window'::text, NULL::text[], NULL::bigint[], NULL::bigint[],
                            NULL::boolean[], NULL::bigint[], win.need;
        RETURN;
    END IF;

    SELECT array_agg(COALESCE(c.value, 0) ORDER BY u.ord),
           array_agg(l.soft ORDER BY u.ord),
           array_agg(l.hard ORDER BY u.ord)
      INTO cur, softs, hards
      FROM unnest(p_dims) WITH ORDINALITY AS u(dim, ord)
      LEFT JOIN __SCHEMA__.counters c ON win.keep AND c.budget = p_budget AND c.dimension = u.dim
      LEFT JOIN __SCHEMA__.limits l ON l.budget = p_budget AND l.dimension = u.dim;
    held := __SCHEMA__.pending_for(p_budget, p_dims, p_now);

    FOR i IN 1..n LOOP
        IF cur[i]::numeric + held[i] + p_deltas[i] > 9223372036854775807 THEN
            RETURN QUERY SELECT 'overflow'::text, ARRAY[p_dims[i]], ARRAY[cur[i]], ARRAY[p_deltas[i]],
                                NULL::boolean[], ARRAY[held[i]], NULL::text;
            RETURN;
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
        WITH expired AS (
            SELECT x.ctid FROM __SCHEMA__.dedup x
             WHERE x.expires_at <= p_now
             ORDER BY x.expires_at
             LIMIT 8 FOR UPDATE SKIP LOCKED)
        DELETE FROM __SCHEMA__.dedup d USING expired e WHERE d.ctid = e.ctid;
    END IF;

    RETURN QUERY SELECT st, bd, bu, bl, bc, bp, NULL::text;
END
$fn$;


-- A reply of step p_step for p_budget with status p_status and nothing else.
CREATE FUNCTION __SCHEMA__.reply(p_step text, p_budget text, p_status text)
RETURNS __SCHEMA__.res_reply LANGUAGE sql IMMUTABLE AS $fn$
    SELECT ROW(p_step, p_budget, p_status, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)::__SCHEMA__.res_reply
$fn$;

-- reserve on one budget, its lock held by the caller: check_reserve, then admit (counters of the
-- window containing now, plus pending), then the reservation is written, held or refused.
CREATE FUNCTION __SCHEMA__.reserve_one(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                        p_ttl bigint, p_fp text, p_now bigint, p_remember bigint)
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
    SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, NULL, NULL, NULL);
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

-- check_commit on one budget (no change): 'apply', 'replay-ok' / 'replay-soft' (the recorded
-- answer), or the error statuses not-found, outside, conflict, released, refused, expired.
CREATE FUNCTION __SCHEMA__.check_one(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                      p_fp text, p_now bigint)
RETURNS __SCHEMA__.res_reply LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    r record;
    a __SCHEMA__.res_reply := __SCHEMA__.reply('check', p_budget, 'apply');
    i int;
BEGIN
    SELECT * INTO r FROM __SCHEMA__.reservations x
     WHERE x.budget = p_budget AND x.id = p_id AND x.forget_at > p_now;
    IF NOT FOUND THEN
        RETURN __SCHEMA__.reply('check', p_budget, 'not-found');
    END IF;
    FOR k IN 1..cardinality(p_dims) LOOP
        i := array_position(r.dims, p_dims[k]);
        IF i IS NULL OR p_amounts[k] > r.amounts[i] THEN
            a.status := 'outside';
            a.d1 := p_dims[k]; a.d2 := p_amounts[k]::text; a.d3 := COALESCE(r.amounts[i]::text, '');
            RETURN a;
        END IF;
    END LOOP;
    IF r.state = 'held' THEN
        IF p_now >= r.expires_at THEN
            a.status := 'expired';
            a.expires_at := r.expires_at;
        END IF;
    ELSIF r.state = 'committed' THEN
        IF r.actual_fp = p_fp THEN
            a.status := 'replay-' || r.outcome;
            a.b_dims := r.b_dims; a.b_usage := r.b_usage; a.b_limits := r.b_limits;
            a.b_crossed := r.b_crossed; a.b_pending := r.b_pending;
        ELSE
            a.status := 'conflict';
        END IF;
    ELSE
        a.status := r.state;  -- 'released' | 'refused'
    END IF;
    RETURN a;
END
$fn$;

-- commit on one budget, its lock held by the caller: check_one, then (to apply) the window step
-- with the bounds given ('window' when a rollover needs bounds not given: nothing applied), settle
-- (soft limits), the counters written, the reservation marked committed.
CREATE FUNCTION __SCHEMA__.commit_one(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                       p_fp text, p_now bigint, p_specs text[], p_starts bigint[],
                                       p_ends bigint[])
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
    IF n > 0 THEN
        SELECT * INTO win FROM __SCHEMA__.window_at(p_budget, p_now, p_specs, p_starts, p_ends);
        IF win.need IS NOT NULL THEN
            a := __SCHEMA__.reply('window', p_budget, 'window');
            a.d1 := win.need;
            RETURN a;
        END IF;
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

-- release on one budget, its lock held by the caller: 'freed' (marked released), 'nothing',
-- 'committed', 'not-found'.
CREATE FUNCTION __SCHEMA__.release_one(p_budget text, p_id text, p_now bigint)
RETURNS __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    SELECT x.state, x.expires_at INTO r FROM __SCHEMA__.reservations x
     WHERE x.budget = p_budget AND x.id = p_id AND x.forget_at > p_now;
    IF NOT FOUND THEN
        RETURN __SCHEMA__.reply('release', p_budget, 'not-found');
    ELSIF r.state = 'committed' THEN
        RETURN __SCHEMA__.reply('release', p_budget, 'committed');
    ELSIF r.state = 'held' AND p_now < r.expires_at THEN
        UPDATE __SCHEMA__.reservations x SET
            state = 'released', resolved_at = p_now, forget_at = __SCHEMA__.cap_add(p_now, x.remember_ms)
         WHERE x.budget = p_budget AND x.id = p_id;
        RETURN __SCHEMA__.reply('release', p_budget, 'freed');
    END IF;
    RETURN __SCHEMA__.reply('release', p_budget, 'nothing');
END
$fn$;

-- Takes the lock of every budget, in the order given (name order: no deadlock between calls).
CREATE FUNCTION __SCHEMA__.lock_all(p_budgets text[]) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    FOR k IN 1..cardinality(p_budgets) LOOP
        PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budgets[k]));
    END LOOP;
END
$fn$;

-- stowage_core::raw::reserve_all, locks held: reserve on every budget; if any answered an error
-- or refused, release the holds this call created. Rows: every 'reserve', then the 'release's.
CREATE FUNCTION __SCHEMA__.reserve_all_steps(p_budgets text[], p_id text, p_dims text[],
                                              p_amounts bigint[], p_ttl bigint, p_fp text,
                                              p_now bigint, p_remember bigint)
RETURNS __SCHEMA__.res_reply[] LANGUAGE plpgsql AS $fn$
DECLARE
    acc __SCHEMA__.res_reply[] := '{}';
    failed boolean := false;
    a __SCHEMA__.res_reply;
BEGIN
    FOR k IN 1..cardinality(p_budgets) LOOP
        a := __SCHEMA__.reserve_one(p_budgets[k], p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember);
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

-- stowage_core::raw::commit_all, locks held: check every budget (the first failure is the one
-- row answered); then, if rollovers need bounds not given, one 'window' row per spec (nothing
-- applied); else commit on every budget.
CREATE FUNCTION __SCHEMA__.commit_all_steps(p_budgets text[], p_id text, p_dims text[],
                                             p_amounts bigint[], p_fp text, p_now bigint,
                                             p_specs text[], p_starts bigint[], p_ends bigint[])
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
    IF cardinality(p_dims) > 0 THEN
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
                                            p_specs, p_starts, p_ends);
    END LOOP;
    RETURN acc;
END
$fn$;

CREATE FUNCTION __SCHEMA__.reserve(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                    p_ttl bigint, p_fp text, p_now bigint, p_remember bigint)
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    RETURN NEXT __SCHEMA__.reserve_one(p_budget, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember);
END
$fn$;

CREATE FUNCTION __SCHEMA__.commit(p_budget text, p_id text, p_dims text[], p_amounts bigint[],
                                   p_fp text, p_now bigint, p_specs text[], p_starts bigint[],
                                   p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    RETURN NEXT __SCHEMA__.commit_one(p_budget, p_id, p_dims, p_amounts, p_fp, p_now, p_specs, p_starts, p_ends);
END
$fn$;

CREATE FUNCTION __SCHEMA__.release(p_budget text, p_id text, p_now bigint)
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM pg_advisory_xact_lock(__LOCK__, hashtext(p_budget));
    RETURN NEXT __SCHEMA__.release_one(p_budget, p_id, p_now);
END
$fn$;

CREATE FUNCTION __SCHEMA__.reserve_all(p_budgets text[], p_id text, p_dims text[], p_amounts bigint[],
                                        p_ttl bigint, p_fp text, p_now bigint, p_remember bigint)
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    RETURN QUERY SELECT * FROM unnest(__SCHEMA__.reserve_all_steps(
        p_budgets, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember));
END
$fn$;

CREATE FUNCTION __SCHEMA__.commit_all(p_budgets text[], p_id text, p_dims text[], p_amounts bigint[],
                                       p_fp text, p_now bigint, p_specs text[], p_starts bigint[],
                                       p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    RETURN QUERY SELECT * FROM unnest(__SCHEMA__.commit_all_steps(
        p_budgets, p_id, p_dims, p_amounts, p_fp, p_now, p_specs, p_starts, p_ends));
END
$fn$;

CREATE FUNCTION __SCHEMA__.release_all(p_budgets text[], p_id text, p_now bigint)
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    FOR k IN 1..cardinality(p_budgets) LOOP
        RETURN NEXT __SCHEMA__.release_one(p_budgets[k], p_id, p_now);
    END LOOP;
END
$fn$;

-- stowage_core::raw::report_usage_all: reserve_all with the key as id (TTL p_ttl), then, if held
-- everywhere, commit_all of the same amounts. Rollovers needing bounds not given are answered
-- first ('window' rows, nothing applied).
CREATE FUNCTION __SCHEMA__.report_usage_all(p_budgets text[], p_id text, p_dims text[],
                                             p_amounts bigint[], p_ttl bigint, p_fp text,
                                             p_now bigint, p_remember bigint, p_commit_fp text,
                                             p_specs text[], p_starts bigint[], p_ends bigint[])
RETURNS SETOF __SCHEMA__.res_reply LANGUAGE plpgsql AS $fn$
DECLARE
    a __SCHEMA__.res_reply;
    acc __SCHEMA__.res_reply[] := '{}';
    need text;
    needs text[] := '{}';
BEGIN
    PERFORM __SCHEMA__.lock_all(p_budgets);
    IF cardinality(p_dims) > 0 THEN
        FOR k IN 1..cardinality(p_budgets) LOOP
            SELECT w.need INTO need FROM __SCHEMA__.window_at(p_budgets[k], p_now, p_specs, p_starts, p_ends) w;
            IF need IS NOT NULL AND array_position(needs, need) IS NULL THEN
                needs := needs || need;
                a := __SCHEMA__.reply('window', p_budgets[k], 'window');
                a.d1 := need;
                RETURN NEXT a;
            END IF;
        END LOOP;
        IF cardinality(needs) > 0 THEN
            RETURN;
        END IF;
    END IF;
    acc := __SCHEMA__.reserve_all_steps(p_budgets, p_id, p_dims, p_amounts, p_ttl, p_fp, p_now, p_remember);
    RETURN QUERY SELECT * FROM unnest(acc);
    IF cardinality(acc) = cardinality(p_budgets)
       AND NOT EXISTS (SELECT 1 FROM unnest(acc) o WHERE o.status NOT IN ('reserved', 'replay-reserved')) THEN
        RETURN QUERY SELECT * FROM unnest(__SCHEMA__.commit_all_steps(
            p_budgets, p_id, p_dims, p_amounts, p_commit_fp, p_now, p_specs, p_starts, p_ends));
    END IF;
END
$fn$;
