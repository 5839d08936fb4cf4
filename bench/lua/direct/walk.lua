-- A cold walk for one route straight at one service process: every request a
-- distinct id (the next of a stride of 7919 modulo max_id, from `start`), so
-- no id repeats within a run of fewer than max_id requests and every request
-- misses the cache. Issue 21's per-route figures (docs/decisions/0034).
--
--   wrk -t1 -c32 -d8s --latency -s bench/lua/direct/walk.lua http://127.0.0.1:8002 \
--       -- '/reviews/?product_id=' '&page=1&count=5&sort=relevant' 100001 12345
--   (args: path before the id, path after it, the largest id, a start)
local prefix, suffix, max_id, cur
local step = 7919
init = function(args)
  prefix = args[1]; suffix = args[2] or ""; max_id = tonumber(args[3] or "100001")
  cur = tonumber(args[4] or "1")
end
request = function()
  cur = (cur + step) % max_id
  return wrk.format("GET", prefix .. (cur + 1) .. suffix)
end
