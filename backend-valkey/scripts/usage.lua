-- stowage usage: what WindowStep::at needs, and the amounts held, read in one atomic step (the
-- client applies the window step); lib.lua precedes this file.
-- KEYS[1] counters hash  KEYS[2] policy hash  KEYS[3] stored window hash
-- KEYS[4 .. 6] the budget's reservations, held and pending keys (lib.lua)   ARGV[1] now
-- Returns {policy window spec, stored spec, start, end, 2c, dim1, counter1, ..., dimc, counterc,
-- then dimension, pending pairs (nothing held by expired holds counts)}, each of the first four ""
-- when absent (policy spec "1": a policy without a window).

-- Dimension -> amount held at now by B's live holds (expired ones not yet swept excluded), as a
-- flat list of pairs in HGETALL order.
local function pending_now(B, now)
  local all = redis.call('HGETALL', B.pending)
  local expired = expired_holds(B, now)
  if #expired == 0 then return all end
  local sums = {}
  for i = 1, #all, 2 do sums[all[i]] = all[i + 1] end
  for _, m in ipairs(expired) do
    local rec = redis.call('HGET', B.res, string.sub(m, 20))
    local r = rec and parse(rec)
    if r then
      for i = 1, r.n do
        if sums[r.dims[i]] then sums[r.dims[i]] = sub(sums[r.dims[i]], r.amts[i]) end
      end
    end
  end
  local out = {}
  for i = 1, #all, 2 do
    local v = sums[all[i]]
    if v ~= '0' then
      out[#out + 1] = all[i]
      out[#out + 1] = v
    end
  end
  return out
end

local pspec = redis.call('HGET', KEYS[2], '') or ''
local w = redis.call('HMGET', KEYS[3], 'spec', 'start', 'end')
local counters = redis.call('HGETALL', KEYS[1])
local out = {pspec, w[1] or '', w[2] or '', w[3] or '', tostring(#counters)}
for i = 1, #counters do out[#out + 1] = counters[i] end
local pending = pending_now({res = KEYS[4], held = KEYS[5], pending = KEYS[6]}, ARGV[1])
for i = 1, #pending do out[#out + 1] = pending[i] end
return out
