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

-- Lateness of each send against its slot, in ms buckets (flat: thread:get()
-- cannot carry nested tables). A request sent late was queued in wrk while the
-- service was behind; wrk does not charge that wait to its latency, so the
-- harness adds the lateness back when it judges a p99 at a fixed rate.
LATE_EDGES = { 0, 1, 2, 3, 4, 5, 7, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 250, 500, 1000 }
pace = {}
for _, edge in ipairs(LATE_EDGES) do pace["le" .. edge] = 0 end
pace["inf"] = 0

local function note_late(late_ms)
    for _, edge in ipairs(LATE_EDGES) do
        if late_ms <= edge then
            pace["le" .. edge] = pace["le" .. edge] + 1
            return
        end
    end
    pace["inf"] = pace["inf"] + 1
end

function delay()
    local now = bench_now_ms()
    if bench_next_ms == nil then
        bench_next_ms = now  -- start
    elseif bench_next_ms < now - 1000 then
        -- More than a second behind: catching up would burst. Skipped slots
        -- are not sent (the achieved rate shows them); this send is that late.
        note_late(now - bench_next_ms)
        bench_next_ms = now
    end
    local slot = bench_next_ms
    bench_next_ms = bench_next_ms + bench_period_ms
    local wait = slot - now
    if wait < 0 then
        note_late(-wait)
        return 0
    end
    note_late(0)
    return math.floor(wait)
end
