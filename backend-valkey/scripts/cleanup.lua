-- stowage cleanup of one record: delete up to a batch of rows with stored_at < bound, free their keys.
-- KEYS[1] rows   KEYS[2] idempotency hash
-- ARGV[1] "(" .. bound as 16 hex digits   ARGV[2] batch size
-- Returns how many rows were deleted (fewer than the batch: nothing older is left).
local old = redis.call('ZRANGEBYLEX', KEYS[1], '-', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, member in ipairs(old) do
  local keylen = tonumber(string.sub(member, 33, 40), 16)
  if keylen > 0 then
    local key = string.sub(member, 41, 40 + keylen)
    if redis.call('HGET', KEYS[2], key) == member then
      redis.call('HDEL', KEYS[2], key)
    end
  end
  redis.call('ZREM', KEYS[1], member)
end
return #old
