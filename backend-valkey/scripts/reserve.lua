-- stowage reserve and reserve_all (SEMANTICS §4.2, §4.3) in one atomic call; lib.lua precedes
-- this file. KEYS: 7 per budget (lib.lua), budgets in name order. ARGV: now, remember_ms, nb,
-- computable, per budget its window (spec, start, end), then ttl_ms, id, n, n dimensions, n
-- amounts. A reserve writes no counters: when no window can fail at now (computable), a rolled
-- window's counters count as zero without its bounds, so it never asks for them.
-- Returns {'window', budget index, spec} (nothing written; repeat with that budget's bounds) or
-- {'reserved', then per budget: index, status, blob, expires_at}.
local budgets, windows, now, remember, p, computable = arguments()
if not computable then
  local need = need_window(budgets, windows, now)
  if need then return need end
end
local id, dims, amts = dimension_args(p + 1)
local answer = reserve_all(budgets, windows, now, remember, id, ARGV[p], dims, amts, computable)
return answer
