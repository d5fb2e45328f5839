-- stowage release and release_all (SEMANTICS §4.2, §4.3) in one atomic call; lib.lua precedes
-- this file. KEYS: 7 per budget (lib.lua), budgets in name order. ARGV: now, remember_ms, nb,
-- computable (unused),
-- per budget a window ('' '' '': unused), then id.
-- Returns {'released', then per budget: index, status, blob, expires_at}.
local budgets, windows, now, remember, p = arguments()
local answer = {'released'}
for b = 1, #budgets do
  push(answer, b, release(budgets[b], ARGV[p], now))
end
return answer
