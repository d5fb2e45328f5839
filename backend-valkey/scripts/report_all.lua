-- stowage report_usage_all (SEMANTICS §4.3) in one atomic call: reserve_all under the report's
-- dedup key, then, if every budget reserved, commit_all of the same amounts; lib.lua precedes
-- this file. KEYS and ARGV as reserve.lua (ttl_ms is REPORT_ALL_TTL_MS). The commit step rolls
-- windows, so rollovers ask for bounds first, whether or not windows are always computable.
-- Returns {'window', budget index, spec}, the answer of reserve.lua when a budget failed or
-- refused, or the answer of commit.lua.
local budgets, windows, now, remember, p, computable = arguments()
local need = need_window(budgets, windows, now)
if need then return need end
local id, dims, amts = dimension_args(p + 1)
local answer, reserved = reserve_all(budgets, windows, now, remember, id, ARGV[p], dims, amts, computable)
if not reserved then return answer end
return commit_all(budgets, windows, now, id, dims, amts)
