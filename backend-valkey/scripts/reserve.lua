-- stowage reserve and reserve_all (SEMANTICS §4.2, §4.3) in one atomic call; lib.lua precedes
-- this file. KEYS: 7 per budget (lib.lua), budgets in name order. ARGV: now, remember_ms, nb,
-- per budget its window (spec, start, end), then ttl_ms, id, n, n dimensions, n amounts.
-- Returns {'window', budget index, spec} (nothing written; repeat with that budget's bounds) or
-- {'reserved', then per budget: index, status, blob, expires_at}.
local budgets, windows, now, remember, p = arguments()
local need = need_window(budgets, windows, now)
if need then return need end
local id, dims, amts = dimension_args(p + 1)
local answer = reserve_all(budgets, windows, now, remember, id, ARGV[p], dims, amts)
return answer
