-- stowage set_policy / delete_policy: replace (or remove) the whole policy atomically, with the
-- window change of SEMANTICS §4.1 (stowage_core::WindowChange::at) in the same step.
-- KEYS[1] policy hash  KEYS[2] counters hash  KEYS[3] stored window hash (spec, start, end)
-- ARGV[1] now (ms)  ARGV[2] the new policy's window spec ("" for none, or for delete)
-- ARGV[3], ARGV[4] its bounds at now (start, end; "" when the client could not compute them)
-- ARGV[5] the old window spec whose bounds at now the client checked it can compute ("" if none)
-- ARGV[6] "set" or "delete"
-- ARGV[7 ..] (set): triples of dimension, soft, hard (decimal or "" for no limit).
-- Field "" (never a valid name) marks that a policy exists, even one without limits, and holds
-- its window spec ("1": no window).
-- Returns {status, existed}: status "ok", or "old" (the client must check the old window's
-- bounds at now and repeat with ARGV[5] set), or "new" (the change needs the new bounds the
-- client could not compute); existed: '1' when a policy was there.
-- Times stay decimal strings, compared by length, then bytes.

local MAX = '9223372036854775807'

local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

local now = ARGV[1]
local new = ARGV[2]
local old = redis.call('HGET', KEYS[1], '')
local existed = old and '1' or '0'
if old == '1' or not old then old = '' end

if old ~= new then
  -- keep = WindowStep::at(old, stored, now).keeps_counters()
  local keep = true
  if old ~= '' then
    local w = redis.call('HMGET', KEYS[3], 'spec', 'start', 'end')
    local current = w[1] == old and w[3] and (w[3] == MAX or gt(w[3], now))
    if not current then
      -- WindowStep::at computes the old window's bounds here, and fails where they fail.
      if ARGV[5] ~= old then return {'old', old} end
      keep = not w[1]
    end
  end
  if new ~= '' and ARGV[3] == '' then return {'new', new} end
  if not keep then redis.call('DEL', KEYS[2]) end
  if new == '' then
    redis.call('DEL', KEYS[3])
  else
    redis.call('DEL', KEYS[3])
    redis.call('HSET', KEYS[3], 'spec', new, 'start', ARGV[3], 'end', ARGV[4])
  end
end

redis.call('DEL', KEYS[1])
if ARGV[6] == 'set' then
  local fields = {'', new == '' and '1' or new}
  for i = 7, #ARGV, 3 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1] .. ',' .. ARGV[i + 2]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
end
return {'ok', existed}
