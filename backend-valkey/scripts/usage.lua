-- stowage usage: what WindowStep::at needs, read in one atomic step (the client applies it).
-- KEYS[1] counters hash  KEYS[2] policy hash  KEYS[3] stored window hash
-- Returns {policy window spec, stored spec, start, end, dim1, counter1, dim2, counter2, ...},
-- each of the first four "" when absent (policy spec "1": a policy without a window).
local pspec = redis.call('HGET', KEYS[2], '') or ''
local w = redis.call('HMGET', KEYS[3], 'spec', 'start', 'end')
local out = {pspec, w[1] or '', w[2] or '', w[3] or ''}
local counters = redis.call('HGETALL', KEYS[1])
for i = 1, #counters do out[#out + 1] = counters[i] end
return out
