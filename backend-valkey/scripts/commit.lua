-- stowage commit and commit_all (SEMANTICS §4.2, §4.3) in one atomic call; lib.lua precedes
-- this file. KEYS: 7 per budget (lib.lua), budgets in name order. ARGV: now, remember_ms, nb,
-- computable (unused),
-- per budget its window (spec, start, end), then id, m, m dimensions, m amounts (the actual).
-- Returns {'window', budget index, spec} (nothing written; repeat with that budget's bounds) or
-- {'committed', then per budget answered: index, status, blob, expires_at}; a failing budget's
-- answer is the last.
local budgets, windows, now, remember, p = arguments()
local need = need_window(budgets, windows, now)
if need then return need end
local id, dims, amts = dimension_args(p)
return commit_all(budgets, windows, now, id, dims, amts)
