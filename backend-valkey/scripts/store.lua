-- stowage store / store_idempotent: append one row to a record.
-- KEYS[1] rows (sorted set, all scores 0, ordered by member bytes)
-- KEYS[2] store-order counter   KEYS[3] idempotency hash (key -> member)
-- ARGV[1] stored_at as 16 lowercase hex digits   ARGV[2] value (serialized JSON)
-- ARGV[3] idempotency key, or "" for a plain store
-- KEYS[4], ARGV[4] (standalone only): the namespace's name index and the record name, listed in
-- the same atomic step (in a cluster the index lives on another slot and is written just before).
-- Member: stored_at(16 hex) seq(16 hex) keylen(8 hex) key value -- byte order = (time, store order).
-- Returns 'appended', 'exists' (same value and time) or 'conflict'.
local key = ARGV[3]
if key ~= '' then
  local existing = redis.call('HGET', KEYS[3], key)
  if existing then
    local keylen = tonumber(string.sub(existing, 33, 40), 16)
    local value = string.sub(existing, 41 + keylen)
    if string.sub(existing, 1, 16) == ARGV[1] and value == ARGV[2] then
      return 'exists'
    end
    return 'conflict'
  end
end
if KEYS[4] then
  redis.call('ZADD', KEYS[4], 0, ARGV[4])
end
local seq = redis.call('INCR', KEYS[2])
local member = ARGV[1] .. string.format('%016x', seq) .. string.format('%08x', #key) .. key .. ARGV[2]
redis.call('ZADD', KEYS[1], 0, member)
if key ~= '' then
  redis.call('HSET', KEYS[3], key, member)
end
return 'appended'
