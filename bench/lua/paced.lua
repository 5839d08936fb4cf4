-- workload.lua at a fixed rate: args rate=<total rps> threads=<wrk -t>.
-- wrk decides whether a script paces when it loads it (before init sees the
-- args), so pacing needs its own file that defines delay().
--
-- Each thread owns an even share of the rate as a schedule of send slots; a
-- connection that becomes free takes the next slot and waits for it. When the
-- server falls behind, slots queue up and are sent as soon as connections
-- free up (like wrk2), but wrk still times each request from its send, so
-- latencies here do not include time spent queued behind a slow response:
-- the achieved rate is the honest signal of a rate not held.

local dir = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(dir .. "workload.lua")

function delay()
    local now = bench_now_ms()
    if bench_next_ms == nil or bench_next_ms < now - 1000 then
        bench_next_ms = now  -- start, or more than a second behind: do not burst
    end
    local slot = bench_next_ms
    bench_next_ms = bench_next_ms + bench_period_ms
    local wait = slot - now
    if wait < 0 then return 0 end
    return math.floor(wait)
end
