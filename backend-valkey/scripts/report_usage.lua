-- stowage report_usage: SEMANTICS §3 steps 2-6 in one atomic call.
-- Amounts and times never become Lua numbers (doubles): they stay canonical decimal strings,
-- added digit by digit and compared by length, then bytes.
--
-- KEYS[1] counters hash (dimension -> decimal)
-- KEYS[2] policy hash (dimension -> "soft,hard", "" for no limit; field "" marks a policy and
--         holds its window spec, "1" for none)
-- KEYS[3] dedup record hash (only when the report has a key): fp, at, exp, st, out
--         (exp: the expiry its writer computed; a record without it, written before records
--         carried one, expires at at + 24 h, capped at MAX)
-- KEYS[#KEYS - 3] stored window hash: spec, start, end (the counters' window)
-- KEYS[#KEYS - 2 .. #KEYS] the budget's reservations, held and pending keys (lib.lua): hard
--         limits and the overflow check count the amounts held (SEMANTICS §4.2); expired holds
--         are swept first
-- ARGV[1] now (ms)   ARGV[2] expiry of a record written now: now + this handle's dedup TTL,
-- capped at MAX (stowage_core::dedup_expiry)   ARGV[3] fingerprint
-- ARGV[4] server-side expiry (ms, garbage collection only, from this handle's TTL)
-- ARGV[5] n          ARGV[6 .. 5+n] dimensions (sorted)   ARGV[6+n .. 5+2n] deltas
-- ARGV[6+2n .. 8+2n] (optional) spec, start, end: the window containing now, computed by the
-- client (Window::bounds_at) for that spec
-- Returns {status, breaches} with status ok|soft|hard|replay-ok|replay-soft|replay-hard|conflict|overflow|corrupt
-- and breaches as "dim\0usage\0limit\0crossed\0" repeated, where crossed is 0 or 1 followed
-- for hard breaches by '+' and the pending amount (overflow: "dim\0counter\0delta\0"),
-- or {'window', spec}: the policy's window needs bounds at now the call did not bring (nothing
-- applied, nothing recorded; the client repeats the call with them).

-- MAX, add, gt, sub, sweep: lib.lua, which precedes this file in the script.

-- The backfill of records without an expiry: written at + DEFAULT_DEDUP_TTL_MS, capped at MAX.
local LEGACY_TTL = '86400000'

local keyed = #KEYS == 7
local WINDOW = KEYS[#KEYS - 3]
local HOLDS = {res = KEYS[#KEYS - 2], held = KEYS[#KEYS - 1], pending = KEYS[#KEYS]}
if keyed then
  local rec = redis.call('HMGET', KEYS[3], 'fp', 'at', 'st', 'out', 'exp')
  if rec[1] then
    local exp = rec[5]
    if not exp then
      exp = add(rec[2], LEGACY_TTL)
      if gt(exp, MAX) then exp = MAX end
    end
    -- Live while now < exp (stowage_core::dedup_is_live), whatever this handle's TTL.
    if gt(exp, ARGV[1]) then
      if rec[1] ~= ARGV[3] then return {'conflict', ''} end
      return {'replay-' .. rec[3], rec[4]}
    end
  end
end

local n = tonumber(ARGV[5])
local dims, deltas = {}, {}
for i = 1, n do
  dims[i] = ARGV[5 + i]
  deltas[i] = ARGV[5 + n + i]
end

-- SEMANTICS §4.1, stowage_core::WindowStep::at: lifetime, current, or roll to the client's bounds.
local pspec = redis.call('HGET', KEYS[2], '')
local roll, keep = false, true
if pspec and pspec ~= '1' then
  local w = redis.call('HMGET', WINDOW, 'spec', 'start', 'end')
  local current = w[1] == pspec and w[3] and (w[3] == MAX or gt(w[3], ARGV[1]))
  if not current then
    if ARGV[6 + 2 * n] ~= pspec then return {'window', pspec} end
    roll = true
    keep = not w[1]
  end
end

sweep(HOLDS, ARGV[1])
local held = redis.call('HMGET', HOLDS.pending, unpack(dims))

local cur
if keep then
  cur = redis.call('HMGET', KEYS[1], unpack(dims))
else
  cur = {}
end
local lim = redis.call('HMGET', KEYS[2], unpack(dims))

local nxt, tot, soft, hard = {}, {}, {}, {}
for i = 1, n do
  cur[i] = cur[i] or '0'
  held[i] = held[i] or '0'
  nxt[i] = add(cur[i], deltas[i])
  tot[i] = add(add(cur[i], held[i]), deltas[i])
  if gt(tot[i], MAX) then
    return {'overflow', dims[i] .. '\0' .. cur[i] .. ' + pending ' .. held[i] .. '\0' .. deltas[i] .. '\0'}
  end
  if lim[i] then
    local comma = string.find(lim[i], ',', 1, true)
    if not comma then return {'corrupt', dims[i]} end
    soft[i] = string.sub(lim[i], 1, comma - 1)
    hard[i] = string.sub(lim[i], comma + 1)
  else
    soft[i] = ''
    hard[i] = ''
  end
end

local status = 'ok'
local out = {}
for i = 1, n do
  if hard[i] ~= '' and gt(tot[i], hard[i]) then
    status = 'hard'
    local crossed = gt(add(cur[i], held[i]), hard[i]) and '0' or '1'
    out[#out + 1] = dims[i] .. '\0' .. cur[i] .. '\0' .. hard[i] .. '\0' .. crossed .. '+' .. held[i] .. '\0'
  end
end

if status == 'ok' then
  local fields = {}
  for i = 1, n do
    fields[#fields + 1] = dims[i]
    fields[#fields + 1] = nxt[i]
  end
  if roll then
    if not keep then redis.call('DEL', KEYS[1]) end
    redis.call('HSET', WINDOW, 'spec', pspec, 'start', ARGV[7 + 2 * n], 'end', ARGV[8 + 2 * n])
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  for i = 1, n do
    if soft[i] ~= '' and gt(nxt[i], soft[i]) then
      status = 'soft'
      local crossed = gt(cur[i], soft[i]) and '0' or '1'
      out[#out + 1] = dims[i] .. '\0' .. nxt[i] .. '\0' .. soft[i] .. '\0' .. crossed .. '\0'
    end
  end
end

local breaches = table.concat(out)
if keyed then
  redis.call('HSET', KEYS[3], 'fp', ARGV[3], 'at', ARGV[1], 'exp', ARGV[2], 'st', status, 'out', breaches)
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
return {status, breaches}
