-- One wrk script for every workload: a weighted mix of operations over id
-- pools read from files, each response checked (status and a body marker),
-- and a JSON summary printed by done() for bench/run.py to parse.
--
--   wrk -t2 -c64 -d10s -s bench/lua/workload.lua URL -- \
--       ops=product:1,meta:1 products=ids/hot.txt questions=ids/hot-q.txt marker=bench-x
--
-- Pools (files of ids, one per line): products, questions (reads); wproducts,
-- wquestions, wreviews, wanswers (writes; default to the read pools).
-- Read ids are drawn at random, or with walk=<from> (cold reads) taken in
-- file order, thread k of n from `from` ids past the start of its stretch,
-- k-1 n-ths of the way in: no read id repeats until the threads together
-- have taken a whole pool (bench.data shuffles the cold pools' files, so the
-- order is random and the walk uniform; bench.workloads moves `from` on by
-- each walked run's requests, so the next run goes on where it stopped).
-- Every request carries X-Request-Id "bw.<op>.<target>.<seq>"; the gateway
-- echoes it, so response() knows which request it is answering although a
-- thread's connections share one Lua state. Without the echo (the ceiling
-- nginx), a single-op mix is still checked; a multi-op mix is checked loosely.

local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]])
local ts = ffi.new("bench_timespec")

-- Milliseconds on CLOCK_MONOTONIC (1): wrk gives Lua no clock of its own.
function bench_now_ms()
    ffi.C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local JSON_HEADERS = { ["Content-Type"] = "application/json" }
local BODY_TEXT = "Benchmark write: this text is long enough for the fifty character minimum rule."

-- kind: which pool the target id comes from; expect: status; marker: a body
-- substring ("[" = body starts with it); write: counted as a write.
local OPS = {
    product          = { kind = "p",  expect = 200, marker = '"features"' },
    styles           = { kind = "p",  expect = 200, marker = '"results"' },
    related          = { kind = "p",  expect = 200, marker = "[" },
    reviews_relevant = { kind = "p",  expect = 200, marker = '"results"' },
    reviews_newest   = { kind = "p",  expect = 200, marker = '"results"' },
    reviews_helpful  = { kind = "p",  expect = 200, marker = '"results"' },
    meta             = { kind = "p",  expect = 200, marker = '"ratings"' },
    questions        = { kind = "p",  expect = 200, marker = '"results"' },
    answers          = { kind = "q",  expect = 200, marker = '"results"' },
    post_review      = { kind = "wp", expect = 201, write = true },
    post_question    = { kind = "wp", expect = 201, write = true },
    post_answer      = { kind = "wq", expect = 201, write = true },
    review_helpful   = { kind = "wr", expect = 204, write = true },
    review_report    = { kind = "wr", expect = 204, write = true, record = true },
    question_helpful = { kind = "wq", expect = 204, write = true },
    question_report  = { kind = "wq", expect = 204, write = true, record = true },
    answer_helpful   = { kind = "wa", expect = 204, write = true },
    answer_report    = { kind = "wa", expect = 204, write = true, record = true },
    fixed            = { kind = "-",  expect = 200, marker = '"results"' },
    bare             = { kind = "-",  expect = 200, marker = '"results"' },
    query            = { kind = "r",  expect = 200, marker = '"results"' },
}

-- Writes (GETs are built from GET_PATHS in request()).
local function request_for(op, id, marker)
    if op == "post_review" then
        return "POST", "/reviews", string.format(
            '{"product_id":%d,"rating":%d,"summary":"bench","body":"%s","recommend":true,'
            .. '"name":"%s","email":"bench@example.com","photos":[],"characteristics":{}}',
            id, math.random(1, 5), BODY_TEXT, marker)
    end
    if op == "post_question" then
        return "POST", "/qa/questions", string.format(
            '{"body":"%s","name":"%s","email":"bench@example.com","product_id":%d}',
            BODY_TEXT, marker, id)
    end
    if op == "post_answer" then
        return "POST", "/qa/questions/" .. id .. "/answers", string.format(
            '{"body":"%s","name":"%s","email":"bench@example.com","photos":[]}', BODY_TEXT, marker)
    end
    if op == "review_helpful" then return "PUT", "/reviews/" .. id .. "/helpful" end
    if op == "review_report" then return "PUT", "/reviews/" .. id .. "/report" end
    if op == "question_helpful" then return "PUT", "/qa/questions/" .. id .. "/helpful" end
    if op == "question_report" then return "PUT", "/qa/questions/" .. id .. "/report" end
    if op == "answer_helpful" then return "PUT", "/qa/answers/" .. id .. "/helpful" end
    if op == "answer_report" then return "PUT", "/qa/answers/" .. id .. "/report" end
    error("unknown op " .. op)
end

local function parse_args(args)
    local out = {}
    for _, a in ipairs(args) do
        local k, v = string.match(a, "^([%w_]+)=(.*)$")
        if k then out[k] = v end
    end
    return out
end

local function load_ids(path)
    local ids = {}
    if path == nil or path == "" then return ids end
    for line in io.lines(path) do
        local n = tonumber(line)
        if n then ids[#ids + 1] = n end
    end
    return ids
end

-- Main state: collect the threads so done() can read their counters.
local threads = {}
function setup(thread)
    thread:set("thread_no", #threads + 1)
    threads[#threads + 1] = thread
end

local cfg, pools, picks, total_weight, seq, single_op, walk, walk_at
-- Globals, not locals: done() reads them from each thread with thread:get().
stats, bad_samples = nil, nil
rec_review_report, rec_question_report, rec_answer_report = nil, nil, nil

local function parse_ops(spec)
    local list, total = {}, 0
    for name, weight in string.gmatch(spec, "([%w_]+):(%d+)") do
        if OPS[name] == nil then error("unknown op " .. name) end
        total = total + tonumber(weight)
        list[#list + 1] = { name = name, cum = total }
    end
    return list, total
end

function init(args)
    cfg = parse_args(args)
    math.randomseed(os.time() * 1000 + (thread_no or 0))
    local products = load_ids(cfg.products)
    local questions = load_ids(cfg.questions)
    pools = {
        p = products,
        q = questions,
        wp = cfg.wproducts and load_ids(cfg.wproducts) or products,
        wq = cfg.wquestions and load_ids(cfg.wquestions) or questions,
        wr = load_ids(cfg.wreviews),
        wa = load_ids(cfg.wanswers),
        r = load_ids(cfg.reviews),
        ["-"] = { 0 },
    }
    picks, total_weight = parse_ops(cfg.ops or "fixed:1")
    for _, p in ipairs(picks) do
        local pool = pools[OPS[p.name].kind]
        if #pool == 0 then error("op " .. p.name .. " has an empty id pool") end
    end
    single_op = (#picks == 1) and picks[1].name or nil
    walk = tonumber(cfg.walk or "")
    walk_at = {}  -- read pool kind -> index of the id last taken
    seq = 0
    -- Flat counters "<op>|sent", "<op>|ok", "<op>|bad", "<op>|s<status>", and
    -- flat per-op id lists: wrk's thread:get() crashes on nested tables.
    stats = { ["?|ok"] = 0, ["?|bad"] = 0 }
    for _, p in ipairs(picks) do
        stats[p.name .. "|sent"], stats[p.name .. "|ok"], stats[p.name .. "|bad"] = 0, 0, 0
    end
    bad_samples = {}
    rec_review_report, rec_question_report, rec_answer_report = {}, {}, {}
    -- Pacing (paced.lua): this thread's share of the target rate.
    local rate = tonumber(cfg.rate or "0")
    local nthreads = tonumber(cfg.threads or "1")
    bench_period_ms = (rate > 0) and (1000 * nthreads / rate) or 0
    bench_next_ms = nil
end

local function choose_op()
    local r = math.random() * total_weight
    for _, p in ipairs(picks) do
        if r < p.cum then return p.name end
    end
    return picks[#picks].name
end

-- GET paths as prefix .. id .. suffix: a GET request is then one concatenation,
-- where wrk.format builds a table and formats every header (the harness shares
-- the two cores with what it measures, so its own CPU per request matters).
local GET_PATHS = {
    product          = { "/products/", "" },
    styles           = { "/products/", "/styles" },
    related          = { "/products/", "/related" },
    reviews_relevant = { "/reviews/?product_id=", "&page=1&count=5&sort=relevant" },
    reviews_newest   = { "/reviews/?product_id=", "&page=1&count=5&sort=newest" },
    reviews_helpful  = { "/reviews/?product_id=", "&page=1&count=5&sort=helpful" },
    meta             = { "/reviews/meta?product_id=", "" },
    questions        = { "/qa/questions?product_id=", "&page=1&count=5" },
    answers          = { "/qa/questions/", "/answers?page=1&count=5" },
    fixed            = { "/fixed" },  -- no id
    bare             = { "/bare" },
    query            = { "/query?id=", "" },
}
-- Counter keys per op, built once rather than concatenated per request.
local KEYS = {}
local function keys_for(op)
    local k = KEYS[op]
    if k == nil then
        k = { sent = op .. "|sent", ok = op .. "|ok", bad = op .. "|bad", status = {} }
        KEYS[op] = k
    end
    return k
end

local function next_id(kind)
    local pool = pools[kind]
    if not walk or (kind ~= "p" and kind ~= "q") then return pool[math.random(#pool)] end
    local at = walk_at[kind]
    if at == nil then
        at = walk + math.floor(((thread_no or 1) - 1) * #pool / tonumber(cfg.threads or "1"))
    end
    at = at % #pool + 1
    walk_at[kind] = at
    return pool[at]
end

local host, rid_tag

function request()
    local op = choose_op()
    local id = next_id(OPS[op].kind)
    seq = seq + 1
    local sent = keys_for(op).sent
    stats[sent] = stats[sent] + 1
    if host == nil then
        host = wrk.headers["Host"] or wrk.host
        rid_tag = "." .. (thread_no or 0) .. "."
    end
    local rid = "bw." .. op .. "." .. id .. rid_tag .. seq
    local get = GET_PATHS[op]
    if get ~= nil then
        local path = get[2] == nil and get[1] or get[1] .. id .. get[2]
        return "GET " .. path .. " HTTP/1.1\r\nHost: " .. host
            .. "\r\nX-Request-Id: " .. rid .. "\r\n\r\n"
    end
    local method, path, body = request_for(op, id, cfg.marker or "bench")
    local headers = { ["X-Request-Id"] = rid }
    if body then headers["Content-Type"] = JSON_HEADERS["Content-Type"] end
    return wrk.format(method, path, headers, body)
end

local function body_ok(spec, body)
    if spec.marker == nil then return true end
    if spec.marker == "[" then return body ~= nil and string.sub(body, 1, 1) == "[" end
    return body ~= nil and string.find(body, spec.marker, 1, true) ~= nil
end

local function bump(key)
    stats[key] = (stats[key] or 0) + 1
end

local function note_bad(op, status, body)
    if #bad_samples < 5 then
        bad_samples[#bad_samples + 1] =
            string.format("%s %d %s", op, status, string.sub(body or "", 1, 120))
    end
end

function response(status, headers, body)
    local rid = headers["X-Request-Id"] or headers["x-request-id"]
    local op, target
    if rid then op, target = string.match(rid, "^bw%.([%w_]+)%.(%d+)%.") end
    op = op or single_op
    local keys = op and KEYS[op]  -- set by this thread's first request of op
    if keys == nil then
        -- No echo and several ops: only a status check is possible.
        if status < 300 then bump("?|ok") else bump("?|bad"); note_bad("?", status, body) end
        return
    end
    local status_key = keys.status[status]
    if status_key == nil then
        status_key = op .. "|s" .. status
        keys.status[status] = status_key
    end
    bump(status_key)
    local spec = OPS[op]
    if status == spec.expect and body_ok(spec, body) then
        bump(keys.ok)
        if spec.record and target then
            local list = _G["rec_" .. op]
            list[#list + 1] = tonumber(target)
        end
    else
        bump(keys.bad)
        note_bad(op, status, body)
    end
end

-- A tiny JSON encoder: wrk's LuaJIT has no json module.
local function encode(v)
    local t = type(v)
    if t == "number" then
        if v ~= v or v == math.huge or v == -math.huge then return "null" end
        return string.format("%.17g", v)
    end
    if t == "string" then
        return '"' .. string.gsub(v, '[%c"\\]', function(c)
            return string.format("\\u%04x", string.byte(c))
        end) .. '"'
    end
    if t == "boolean" then return tostring(v) end
    if t ~= "table" then return "null" end
    if #v > 0 or next(v) == nil then
        local parts = {}
        for i = 1, #v do parts[i] = encode(v[i]) end
        return "[" .. table.concat(parts, ",") .. "]"
    end
    local parts = {}
    for k, val in pairs(v) do parts[#parts + 1] = encode(tostring(k)) .. ":" .. encode(val) end
    return "{" .. table.concat(parts, ",") .. "}"
end

-- Fold one thread's flat counters into {op: {sent, ok, bad, status: {code: n}}}.
local function merge_thread(total, flat)
    for key, n in pairs(flat) do
        local op, field = string.match(key, "^([%w_?]+)|(%w+)$")
        local m = total.ops[op] or { sent = 0, ok = 0, bad = 0, status = {} }
        if string.sub(field, 1, 1) == "s" and field ~= "sent" then
            local code = string.sub(field, 2)
            m.status[code] = (m.status[code] or 0) + n
        else
            m[field] = (m[field] or 0) + n
        end
        total.ops[op] = m
    end
end

function done(summary, latency, requests)
    local total = { ops = {}, bad_samples = {} }
    local recorded = {}
    for _, thread in ipairs(threads) do
        merge_thread(total, thread:get("stats"))
        for _, b in ipairs(thread:get("bad_samples") or {}) do
            if #total.bad_samples < 10 then total.bad_samples[#total.bad_samples + 1] = b end
        end
        for _, op in ipairs({ "review_report", "question_report", "answer_report" }) do
            local list = recorded[op] or {}
            for _, id in ipairs(thread:get("rec_" .. op) or {}) do list[#list + 1] = id end
            recorded[op] = list
        end
    end
    local pct = {}
    for _, p in ipairs({ 50, 75, 90, 99, 99.5, 99.9 }) do pct[tostring(p)] = latency:percentile(p) end
    local lateness = nil
    for _, thread in ipairs(threads) do
        local t = thread:get("pace")
        if t then
            lateness = lateness or {}
            for k, n in pairs(t) do lateness[k] = (lateness[k] or 0) + n end
        end
    end
    local out = {
        duration_us = summary.duration,
        requests = summary.requests,
        bytes = summary.bytes,
        errors = summary.errors,
        latency_us = { min = latency.min, max = latency.max, mean = latency.mean,
                       stdev = latency.stdev, percentiles = pct },
        ops = total.ops,
        bad_samples = total.bad_samples,
        recorded = recorded,
        lateness_ms = lateness,
    }
    io.write("BENCH_JSON " .. encode(out) .. "\n")
end
