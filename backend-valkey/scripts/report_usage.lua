-- stowage report_usage: SEMANTICS §3 steps 2-6 in one atomic call.
-- Amounts and times stay canonical decimal strings: add and gt (holds.lua) are exact over
-- 0..=MAX (Lua numbers only for operands of at most 15 digits, digit by digit beyond).
--
-- KEYS[1] counters hash (dimension -> decimal)
-- KEYS[2] policy hash (dimension -> "soft,hard", "" for no limit; field "" marks a policy and
--         holds its window spec, "1" for none)
-- KEYS[3] dedup record (only when the report has a key): a string, the fingerprint digest
--         (DIGEST bytes, scripts.rs fingerprint_digest), the status's first letter (o, s, h),
--         the record's expiry (decimal ms, computed by its writer), then, when it has
--         breaches, NUL and the breaches; server-side expiry (PX) for garbage collection only
-- KEYS[#KEYS - 3] stored window hash: spec, start, end (the counters' window)
-- KEYS[#KEYS - 2 .. #KEYS] the budget's reservations, held and pending keys (holds.lua): hard
--         limits and the overflow check count the amounts held (SEMANTICS §4.2); expired holds
--         are swept first
-- ARGV[1] now (ms)   ARGV[2] expiry of a record written now: now + this handle's dedup TTL,
-- capped at MAX (stowage_core::dedup_expiry)   ARGV[3] fingerprint digest
-- ARGV[4] server-side expiry (ms, garbage collection only, from this handle's TTL)
-- ARGV[5] n          ARGV[6 .. 5+n] dimensions (sorted)   ARGV[6+n .. 5+2n] deltas
-- ARGV[6+2n .. 8+2n] (optional) spec, start, end: the window containing now, computed by the
-- client (Window::bounds_at) for that spec
-- Returns {status, breaches} with status ok|soft|hard|replay-ok|replay-soft|replay-hard|conflict|overflow|corrupt
-- and breaches as "dim\0usage\0limit\0crossed\0" repeated, where crossed is 0 or 1 followed
-- for hard breaches by '+' and the pending amount (overflow: "dim\0counter\0delta\0"),
-- or {'window', spec}: the policy's window needs bounds at now the call did not bring (nothing
-- applied, nothing recorded; the client repeats the call with them).
-- Commands on the hot path (fresh key, no window, no holds): GET, HMGET policy, ZRANGE held,
-- HMGET counters, HSET counters, SET record.

-- MAX, add, gt, pad, sweep: holds.lua, which precedes this file in the script (and only it:
-- every function defined before the body is a closure made on every call).

local DIGEST = 22

local now = ARGV[1]
local keyed = #KEYS == 7
local WINDOW = KEYS[#KEYS - 3]
local HOLDS = {res = KEYS[#KEYS - 2], held = KEYS[#KEYS - 1], pending = KEYS[#KEYS]}
if keyed then
  local rec = redis.call('GET', KEYS[3])
  if rec then
    local z = string.find(rec, '\0', DIGEST + 2, true)
    local exp = string.sub(rec, DIGEST + 2, (z or 0) - 1)
    -- Live while now < exp (stowage_core::dedup_is_live), whatever this handle's TTL.
    if gt(exp, now) then
      if string.sub(rec, 1, DIGEST) ~= ARGV[3] then return {'conflict', ''} end
      local c = string.sub(rec, DIGEST + 1, DIGEST + 1)
      local st = (c == 'o' and 'ok') or (c == 's' and 'soft') or (c == 'h' and 'hard')
      if not st then return {'corrupt', ''} end
      return {'replay-' .. st, z and string.sub(rec, z + 1) or ''}
    end
  end
end

local n = tonumber(ARGV[5])
local dims, deltas = {}, {}
for i = 1, n do
  dims[i] = ARGV[5 + i]
  deltas[i] = ARGV[5 + n + i]
end

-- The policy's window spec and the limits of dims, in one read.
local lim = redis.call('HMGET', KEYS[2], '', unpack(dims))
local pspec = lim[1]

-- SEMANTICS §4.1, stowage_core::WindowStep::at: lifetime, current, or roll to the client's bounds.
local roll, keep = false, true
if pspec and pspec ~= '1' then
  local w = redis.call('HMGET', WINDOW, 'spec', 'start', 'end')
  local current = w[1] == pspec and w[3] and (w[3] == MAX or gt(w[3], now))
  if not current then
    if ARGV[6 + 2 * n] ~= pspec then return {'window', pspec} end
    roll = true
    keep = not w[1]
  end
end

-- Holds: the earliest expiry comes first in `held`; without holds nothing is pending (a pending
-- amount exists only for a hold in `held`), and nothing expired needs no sweep.
local held = {}
local first = redis.call('ZRANGE', HOLDS.held, 0, 0)[1]
if first then
  if not gt(string.sub(first, 1, 19), pad(now)) then sweep(HOLDS, now) end
  held = redis.call('HMGET', HOLDS.pending, unpack(dims))
end

local cur
if keep then
  cur = redis.call('HMGET', KEYS[1], unpack(dims))
else
  cur = {}
end

local nxt, tot, soft, hard = {}, {}, {}, {}
for i = 1, n do
  cur[i] = cur[i] or '0'
  held[i] = held[i] or '0'
  nxt[i] = add(cur[i], deltas[i])
  if held[i] == '0' then tot[i] = nxt[i] else tot[i] = add(add(cur[i], held[i]), deltas[i]) end
  if gt(tot[i], MAX) then
    return {'overflow', dims[i] .. '\0' .. cur[i] .. ' + pending ' .. held[i] .. '\0' .. deltas[i] .. '\0'}
  end
  local l = lim[i + 1]
  if l then
    local comma = string.find(l, ',', 1, true)
    if not comma then return {'corrupt', dims[i]} end
    soft[i] = string.sub(l, 1, comma - 1)
    hard[i] = string.sub(l, comma + 1)
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
    local before = cur[i]
    if held[i] ~= '0' then before = add(cur[i], held[i]) end
    local crossed = gt(before, hard[i]) and '0' or '1'
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
  local value = ARGV[3] .. string.sub(status, 1, 1) .. ARGV[2]
  if breaches ~= '' then value = value .. '\0' .. breaches end
  redis.call('SET', KEYS[3], value, 'PX', ARGV[4])
end
return {status, breaches}
