-- stowage reservations (SEMANTICS §4.2, §4.3): the functions every reservation script shares,
-- after holds.lua and before the script's body, so the rules exist once on the server side,
-- mirroring stowage_core::raw (check_reserve, check_commit, check_release, admit, settle,
-- WindowStep::at) and stowage_core::multi.

-- The reservation scripts' own helpers over holds.lua.

local function capped(a)
  if gt(a, MAX) then return MAX end
  return a
end

-- The budget of keys KEYS[base + 1 .. base + 7].
local function budget_at(base)
  return {counters = KEYS[base + 1], policy = KEYS[base + 2], window = KEYS[base + 3],
          res = KEYS[base + 4], held = KEYS[base + 5], pending = KEYS[base + 6],
          forget = KEYS[base + 7]}
end

-- Reservation::forget_at: min(ended_at + remember_ms, MAX).
local function forget_at(r)
  local ended = r.exp
  if r.st ~= 'held' then ended = r.at end
  return capped(add(ended, r.rem))
end

-- The first fields of a record (request, expiry, remember_ms), to which a new state is appended.
local function head(r)
  return table.concat(r.F, '\0', 1, r.base)
end

-- The reservation `id` of budget B remembered at now: r, or nil; 'corrupt' when undecodable.
local function known(B, id, now)
  local rec = redis.call('HGET', B.res, id)
  if not rec then return nil end
  local r = parse(rec)
  if not r then return 'corrupt' end
  if not gt(forget_at(r), now) then return nil end
  r.rec = rec
  return r
end

-- Removes a few forgotten reservation ids of B.
local function forget_some(B, now)
  local due = redis.call('ZRANGEBYLEX', B.forget, '-', '(' .. pad(add(now, '1')), 'LIMIT', 0, 8)
  for _, m in ipairs(due) do
    local id = string.sub(m, 20)
    redis.call('ZREM', B.forget, m)
    local rec = redis.call('HGET', B.res, id)
    local r = rec and parse(rec)
    if r and not gt(forget_at(r), now) then redis.call('HDEL', B.res, id) end
  end
end

-- WindowStep::at for B at now, given the window the client brought (g: spec, start, end; start
-- '' when its bounds could not be computed): {kind = 'ok' | 'need' | 'error', keep, roll, spec}.
-- free: the caller only reads the counters (reserve) and no window can fail at now
-- (bounds_always_computable): a roll needs no bounds, the counters simply count as zero.
local function wstep(B, now, g, free)
  local pspec = redis.call('HGET', B.policy, '')
  if not pspec or pspec == '1' then return {kind = 'ok', keep = true, roll = false} end
  local w = redis.call('HMGET', B.window, 'spec', 'start', 'end')
  local current = w[1] == pspec and w[3] and (w[3] == MAX or gt(w[3], now))
  if current then return {kind = 'ok', keep = true, roll = false} end
  if free and g[1] ~= pspec then return {kind = 'ok', keep = not w[1], roll = true, spec = pspec} end
  if g[1] ~= pspec then return {kind = 'need', spec = pspec} end
  if g[2] == '' then return {kind = 'error', spec = pspec} end
  return {kind = 'ok', keep = not w[1], roll = true, spec = pspec, start = g[2], stop = g[3]}
end

-- The counters of dims an operation at step ws counts into (missing: '0').
local function counters_of(B, dims, ws)
  local cur = {}
  if ws.keep and #dims > 0 then cur = redis.call('HMGET', B.counters, unpack(dims)) end
  for i = 1, #dims do cur[i] = cur[i] or '0' end
  return cur
end

-- The soft and hard limits of dims ('' for none); nil and the dimension when one is undecodable.
local function limits_of(B, dims)
  local soft, hard = {}, {}
  if #dims == 0 then return soft, hard end
  local lim = redis.call('HMGET', B.policy, unpack(dims))
  for i = 1, #dims do
    if lim[i] then
      local comma = string.find(lim[i], ',', 1, true)
      if not comma then return nil, dims[i] end
      soft[i] = string.sub(lim[i], 1, comma - 1)
      hard[i] = string.sub(lim[i], comma + 1)
    else
      soft[i] = ''
      hard[i] = ''
    end
  end
  return soft, hard
end

-- stowage_core::admit: counters + pending + amount per dimension in order; an overflow is
-- answered at once; hard breaches collected. Returns nil, the breaches and the amounts pending
-- per dimension (as read), or the overflow reply.
local function admit(B, dims, amts, cur)
  local soft, hard = limits_of(B, dims)
  if not soft then return {'corrupt', hard, ''} end
  local held = {}
  if #dims > 0 then held = redis.call('HMGET', B.pending, unpack(dims)) end
  local out = {}
  for i = 1, #dims do
    local h = held[i] or '0'
    local both = add(cur[i], h)
    local after = add(both, amts[i])
    if gt(after, MAX) then
      return {'overflow', dims[i] .. '\0' .. cur[i] .. ' + pending ' .. h .. '\0' .. amts[i], ''}
    end
    if hard[i] ~= '' and gt(after, hard[i]) then
      local crossed = gt(both, hard[i]) and '0' or '1'
      out[#out + 1] = dims[i] .. '\0' .. cur[i] .. '\0' .. hard[i] .. '\0' .. crossed .. '+' .. h
    end
  end
  return nil, out, held
end

-- The dimension-list encoding: n, d1, a1, ..., dn, an.
local function encode(dims, amts)
  local parts = {tostring(#dims)}
  for i = 1, #dims do
    parts[#parts + 1] = dims[i]
    parts[#parts + 1] = amts[i]
  end
  return table.concat(parts, '\0')
end

-- reserve on budget B (SEMANTICS §4.2): R = {id, ttl, dims, amts, g, free}. Returns the reply.
local function reserve(B, R, now, remember)
  local r = known(B, R.id, now)
  if r == 'corrupt' then return {'corrupt', R.id, ''} end
  local req = R.ttl .. '\0' .. encode(R.dims, R.amts)
  if r then
    if string.sub(r.rec, 1, #req + 1) ~= req .. '\0' then return {'conflict', '', ''} end
    if r.st == 'refused' then
      return {'replay-hard', table.concat(r.F, '\0', r.base + 3, #r.F), r.exp}
    end
    return {'replay-reserved', '', r.exp}
  end
  local ws = wstep(B, now, R.g, R.free)
  if ws.kind ~= 'ok' then return {'window-error', ws.spec, ''} end
  sweep(B, now)
  local cur = counters_of(B, R.dims, ws)
  local failed, breaches, held = admit(B, R.dims, R.amts, cur)
  if failed then return failed end
  forget_some(B, now)
  local exp = capped(add(now, R.ttl))
  local front = req .. '\0' .. exp .. '\0' .. remember .. '\0'
  if #breaches > 0 then
    local blob = table.concat(breaches, '\0')
    redis.call('HSET', B.res, R.id, front .. 'refused\0' .. now .. '\0' .. blob)
    redis.call('ZADD', B.forget, 0, pad(capped(add(now, remember))) .. R.id)
    return {'hard', blob, exp}
  end
  redis.call('HSET', B.res, R.id, front .. 'held')
  -- The pending amounts admit read are still current (nothing since touched them): one HSET.
  local pending = {}
  for i = 1, #R.dims do
    if R.amts[i] ~= '0' then
      pending[#pending + 1] = R.dims[i]
      pending[#pending + 1] = add(held[i] or '0', R.amts[i])
    end
  end
  if #pending > 0 then redis.call('HSET', B.pending, unpack(pending)) end
  redis.call('ZADD', B.held, 0, pad(exp) .. R.id)
  redis.call('ZADD', B.forget, 0, pad(capped(add(exp, remember))) .. R.id)
  return {'reserved', '', exp}
end

-- Marks the live hold r of B ended with state text `ended` at now.
local function resolve(B, id, r, now, ended)
  unhold(B, r)
  redis.call('ZREM', B.held, pad(r.exp) .. id)
  redis.call('HSET', B.res, id, head(r) .. '\0' .. ended)
  redis.call('ZADD', B.forget, 0, pad(capped(add(now, r.rem))) .. id)
end

-- release on budget B. Returns the reply.
local function release(B, id, now)
  local r = known(B, id, now)
  if r == 'corrupt' then return {'corrupt', id, ''} end
  if not r then return {'not-found', '', ''} end
  if r.st == 'committed' then return {'committed', '', ''} end
  if r.st == 'held' and gt(r.exp, now) then
    sweep(B, now)
    resolve(B, id, r, now, 'released\0' .. now)
    forget_some(B, now)
    return {'freed', '', ''}
  end
  return {'nothing', '', ''}
end

-- commit's checks (stowage_core::check_commit) on budget B: A = {id, dims, amts, g}. Returns
-- nil and r when the commit applies, else the reply (a replay or an error).
local function check_commit(B, A, now)
  local r = known(B, A.id, now)
  if r == 'corrupt' then return {'corrupt', A.id, ''} end
  if not r then return {'not-found', '', ''} end
  for i = 1, #A.dims do
    local reserved = nil
    for j = 1, r.n do
      if r.dims[j] == A.dims[i] then reserved = r.amts[j] end
    end
    if not reserved or gt(A.amts[i], reserved) then
      return {'outside', A.dims[i] .. '\0' .. A.amts[i] .. '\0' .. (reserved or ''), ''}
    end
  end
  if r.st == 'held' then
    if gt(r.exp, now) then return nil, r end
    return {'expired', '', r.exp}
  end
  if r.st == 'committed' then
    local m = tonumber(r.F[r.base + 3])
    if not m then return {'corrupt', A.id, ''} end
    local stored = table.concat(r.F, '\0', r.base + 3, r.base + 3 + 2 * m)
    if stored ~= encode(A.dims, A.amts) then return {'conflict', '', ''} end
    local status = r.F[r.base + 4 + 2 * m]
    return {'replay-' .. status, table.concat(r.F, '\0', r.base + 5 + 2 * m, #r.F), ''}
  end
  if r.st == 'released' then return {'released', '', ''} end
  if r.st == 'refused' then return {'refused', '', ''} end
  return {'corrupt', A.id, ''}
end

-- commit on budget B once check_commit said it applies: frees the hold, applies the amounts to
-- the window containing now (rolling it over), checks soft limits (stowage_core::settle).
local function apply_commit(B, A, r, now)
  local ws = wstep(B, now, A.g)
  if ws.kind ~= 'ok' then return {'window-error', ws.spec, ''} end
  local cur = counters_of(B, A.dims, ws)
  local soft, bad = limits_of(B, A.dims)
  if not soft then return {'corrupt', bad, ''} end
  local nxt, fields, out = {}, {}, {}
  for i = 1, #A.dims do
    nxt[i] = add(cur[i], A.amts[i])
    if gt(nxt[i], MAX) then
      return {'corrupt', A.dims[i], ''}
    end
    fields[#fields + 1] = A.dims[i]
    fields[#fields + 1] = nxt[i]
    if soft[i] ~= '' and gt(nxt[i], soft[i]) then
      local crossed = gt(cur[i], soft[i]) and '0' or '1'
      out[#out + 1] = A.dims[i] .. '\0' .. nxt[i] .. '\0' .. soft[i] .. '\0' .. crossed
    end
  end
  sweep(B, now)
  if #fields > 0 then
    if ws.roll then
      if not ws.keep then redis.call('DEL', B.counters) end
      redis.call('HSET', B.window, 'spec', ws.spec, 'start', ws.start, 'end', ws.stop)
    end
    redis.call('HSET', B.counters, unpack(fields))
  end
  local status = 'ok'
  if #out > 0 then status = 'soft' end
  local blob = table.concat(out, '\0')
  local ended = 'committed\0' .. now .. '\0' .. encode(A.dims, A.amts) .. '\0' .. status
  if #out > 0 then ended = ended .. '\0' .. blob end
  resolve(B, A.id, r, now, ended)
  forget_some(B, now)
  return {status, blob, ''}
end

-- The arguments every reservation script starts with: ARGV[1] now, ARGV[2] remember_ms (the
-- handle's dedup TTL), ARGV[3] the number of budgets nb, ARGV[4] '1' when no window can fail at
-- now (stowage_core::raw::bounds_always_computable) else '0', then per budget the window the
-- client brought (spec, start, end; '' '' '' for none). KEYS: 7 per budget, in name order.
-- Returns the budgets, their windows, now, remember_ms, the index of the first operation
-- argument and whether windows are always computable.
local function arguments()
  local nb = tonumber(ARGV[3])
  local budgets, windows = {}, {}
  for b = 1, nb do
    budgets[b] = budget_at(7 * (b - 1))
    local w = 5 + 3 * (b - 1)
    windows[b] = {ARGV[w], ARGV[w + 1], ARGV[w + 2]}
  end
  return budgets, windows, ARGV[1], ARGV[2], 5 + 3 * nb, ARGV[4] == '1'
end

-- The first budget whose window needs bounds at now that the call did not bring, as the answer
-- {'window', index, spec}; nil when none does. Read-only: asked before anything is written.
local function need_window(budgets, windows, now)
  for b = 1, #budgets do
    local ws = wstep(budgets[b], now, windows[b])
    if ws.kind == 'need' then return {'window', tostring(b), ws.spec} end
  end
  return nil
end

-- The id, then n, dimensions, amounts, from ARGV[p]: {id, dims, amts}, and the next index.
local function dimension_args(p)
  local n = tonumber(ARGV[p + 1])
  local dims, amts = {}, {}
  for i = 1, n do
    dims[i] = ARGV[p + 1 + i]
    amts[i] = ARGV[p + 1 + n + i]
  end
  return ARGV[p], dims, amts, p + 2 + 2 * n
end

-- Appends budget b's reply to the flat answer list.
local function push(answer, b, reply)
  answer[#answer + 1] = tostring(b)
  answer[#answer + 1] = reply[1]
  answer[#answer + 1] = reply[2]
  answer[#answer + 1] = reply[3]
end

local ERRORS = {conflict = true, overflow = true, corrupt = true, ['window-error'] = true,
                ['not-found'] = true}

-- stowage_core::multi::reserve_all: reserve on every budget; on any error or refusal the holds
-- this call created are released. free: rolls need no bounds (wstep). Returns the answer list
-- and whether every budget reserved.
local function reserve_all(budgets, windows, now, remember, id, ttl, dims, amts, free)
  local answer, replies = {'reserved'}, {}
  local failed = false
  for b = 1, #budgets do
    replies[b] = reserve(budgets[b], {id = id, ttl = ttl, dims = dims, amts = amts, g = windows[b],
                                      free = free}, now, remember)
    local s = replies[b][1]
    if ERRORS[s] or s == 'hard' or s == 'replay-hard' then failed = true end
    push(answer, b, replies[b])
  end
  if failed then
    for b = 1, #budgets do
      if replies[b][1] == 'reserved' then release(budgets[b], id, now) end
    end
  end
  return answer, not failed
end

-- stowage_core::multi::commit_all: every budget checked first (the first failure answers,
-- nothing applied), then commit on every one. Returns the answer list.
local function commit_all(budgets, windows, now, id, dims, amts)
  local steps = {}
  for b = 1, #budgets do
    local reply, r = check_commit(budgets[b], {id = id, dims = dims, amts = amts}, now)
    if reply and not string.find(reply[1], '^replay%-') then
      local answer = {'committed'}
      push(answer, b, reply)
      return answer
    end
    steps[b] = {reply = reply, r = r}
  end
  local answer = {'committed'}
  for b = 1, #budgets do
    local reply = steps[b].reply
    if not reply then
      reply = apply_commit(budgets[b], {id = id, dims = dims, amts = amts, g = windows[b]},
                           steps[b].r, now)
    end
    push(answer, b, reply)
    if ERRORS[reply[1]] then return answer end
  end
  return answer
end
