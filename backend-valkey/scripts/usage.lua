-- stowage usage: what WindowStep::at needs, and the amounts held, read in one atomic step (the
-- client applies the window step); lib.lua precedes this file.
-- KEYS[1] counters hash  KEYS[2] policy hash  KEYS[3] stored window hash
-- KEYS[4 .. 6] the budget's reservations, held and pending keys (lib.lua)   ARGV[1] now
-- Returns {policy window spec, stored spec, start, end, 2c, dim1, counter1, ..., dimc, counterc,
-- then dimension, pending pairs (nothing held by expired holds counts)}, each of the first four ""
-- when absent (policy spec "1": a policy without a window).
local pspec = redis.call('HGET', KEYS[2], '') or ''
local w = redis.call('HMGET', KEYS[3], 'spec', 'start', 'end')
local counters = redis.call('HGETALL', KEYS[1])
local out = {pspec, w[1] or '', w[2] or '', w[3] or '', tostring(#counters)}
for i = 1, #counters do out[#out + 1] = counters[i] end
local pending = pending_now({res = KEYS[4], held = KEYS[5], pending = KEYS[6]}, ARGV[1])
for i = 1, #pending do out[#out + 1] = pending[i] end
return out
