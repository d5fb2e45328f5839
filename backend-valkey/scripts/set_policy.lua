-- stowage set_policy: replace the whole policy atomically.
-- KEYS[1] policy hash. ARGV: triples of dimension, soft, hard (decimal or "" for no limit).
-- Field "" (never a valid name) marks that a policy exists, even one without limits.
redis.call('DEL', KEYS[1])
local fields = {'', '1'}
for i = 1, #ARGV, 3 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1] .. ',' .. ARGV[i + 2]
end
redis.call('HSET', KEYS[1], unpack(fields))
return 1
