-- stowage holds (SEMANTICS §4.2): decimal arithmetic and the budget's reservation records, holds
-- and pending amounts, shared by every budget script. src/scripts.rs puts this file first in
-- report_usage, usage and the reservation scripts (then lib.lua, then the script's body), and
-- sends them without comment lines: an unauthenticated client may not send more than 16 KiB.
-- It holds only what report_usage needs (every function here is a closure made on every call
-- of every script): the reservation scripts' other helpers are in lib.lua, usage's in usage.lua.
--
-- Amounts and times stay canonical decimal strings, compared by length, then bytes; they are
-- added and subtracted as Lua numbers (doubles) only when both operands have at most 15 digits
-- (exact: below 2^53), digit by digit otherwise. Counts of dimensions and budgets (at most 64
-- and 16) are Lua numbers.
--
-- A budget's keys (B): counters, policy, window (as report_usage.lua), reservations (hash id ->
-- record), held (lexicographic sorted set of 19-digit expiry .. id, holds not yet resolved or
-- swept), pending (hash dimension -> amount held by the holds of `held`, absent when 0), forget
-- (lexicographic sorted set of 19-digit forget_at .. id).
--
-- A record, fields separated by NUL (names never contain NUL):
--   ttl, n, d1, a1, ..., dn, an, expires_at, remember_ms, state [, at [, ...]]
-- state held; released, at; refused, at, breaches...; committed, at, m, d1, a1, ..., dm, am,
-- outcome (ok|soft), breaches... Breaches are groups of dimension, usage, limit, crossed, where
-- crossed is 0 or 1, followed for hard breaches by '+' and the pending amount.
-- A reply is {status, blob, expires_at} in the grammar of stowage_core::raw::ReservationReply:
-- blob holds the breaches, or the NUL-separated detail.

local MAX = '9223372036854775807'

-- Operands of at most 15 digits (below 10^15) are exact as Lua numbers (doubles are exact to
-- 2^53 > 2 * 10^15), so is their sum or difference, and Lua 5.1's string.format('%d') casts an
-- integral double to a C long and prints it exactly: the fast path, never used for longer operands.
local SHORT = 15

local function add(a, b)
  if #a <= SHORT and #b <= SHORT then
    local x, y = tonumber(a), tonumber(b)
    if x and y then return string.format('%d', x + y) end
  end
  local digits = {}
  local i, j, carry = #a, #b, 0
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48 end
    if j > 0 then s = s + string.byte(b, j) - 48 end
    if s >= 10 then digits[#digits + 1] = s - 10; carry = 1 else digits[#digits + 1] = s; carry = 0 end
    i = i - 1
    j = j - 1
  end
  local out = {}
  for k = #digits, 1, -1 do out[#out + 1] = string.char(48 + digits[k]) end
  if #out == 0 then return '0' end
  return table.concat(out)
end

-- Canonical decimals (no leading zeros): longer is larger; at equal length, the digit strings
-- compare as bytes.
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end

-- a - b for canonical decimals with a >= b (0 when b > a: never below zero).
local function sub(a, b)
  if not gt(a, b) then return '0' end
  if #a <= SHORT then
    local x, y = tonumber(a), tonumber(b)
    if x and y then return string.format('%d', x - y) end
  end
  local digits = {}
  local i, j, borrow = #a, #b, 0
  while i > 0 do
    local s = string.byte(a, i) - 48 - borrow
    if j > 0 then s = s - (string.byte(b, j) - 48) end
    if s < 0 then s = s + 10; borrow = 1 else borrow = 0 end
    digits[#digits + 1] = s
    i = i - 1
    j = j - 1
  end
  local k = #digits
  while k > 1 and digits[k] == 0 do k = k - 1 end
  local out = {}
  for x = k, 1, -1 do out[#out + 1] = string.char(48 + digits[x]) end
  return table.concat(out)
end

-- A time as 19 digits, so that lexicographic order is numeric order (times <= MAX + 1).
local function pad(t)
  return string.rep('0', 19 - #t) .. t
end

local function split(s)
  local out = {}
  local start = 1
  while true do
    local z = string.find(s, '\0', start, true)
    if not z then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, z - 1)
    start = z + 1
  end
end

-- A record's fields; nil when it cannot be decoded.
local function parse(s)
  local F = split(s)
  local n = tonumber(F[2])
  if not n or #F < 5 + 2 * n then return nil end
  local r = {F = F, n = n, dims = {}, amts = {}, exp = F[3 + 2 * n], rem = F[4 + 2 * n],
             st = F[5 + 2 * n], at = F[6 + 2 * n], base = 4 + 2 * n}
  for i = 1, n do
    r.dims[i] = F[1 + 2 * i]
    r.amts[i] = F[2 + 2 * i]
  end
  if r.st ~= 'held' and not r.at then return nil end
  return r
end

-- Takes r's held amounts out of B's pending aggregate.
local function unhold(B, r)
  for i = 1, r.n do
    if r.amts[i] ~= '0' then
      local cur = redis.call('HGET', B.pending, r.dims[i]) or '0'
      local left = sub(cur, r.amts[i])
      if left == '0' then
        redis.call('HDEL', B.pending, r.dims[i])
      else
        redis.call('HSET', B.pending, r.dims[i], left)
      end
    end
  end
end

-- The holds of B whose expiry is at or before now (below pad(now + 1)).
local function expired_holds(B, now)
  return redis.call('ZRANGEBYLEX', B.held, '-', '(' .. pad(add(now, '1')))
end

-- Frees every expired hold of B from the pending aggregate (lazily, on writes).
local function sweep(B, now)
  for _, m in ipairs(expired_holds(B, now)) do
    local rec = redis.call('HGET', B.res, string.sub(m, 20))
    local r = rec and parse(rec)
    if r then unhold(B, r) end
    redis.call('ZREM', B.held, m)
  end
end
