-- Hot reads straight at one service, ops chosen uniformly from the list given:
--   wrk -t1 -c32 -d8s -s bench/lua/direct/mix.lua http://127.0.0.1:18902 -- reviews,meta
-- Ops: product styles related reviews meta questions answers. Ids come from the
-- hot pools `make bench` writes (run/bench/ids/); each request carries the
-- headers the gateway adds, so the service parses what it parses behind it.
local P, Q = {}, {}
for l in io.lines("run/bench/ids/hot_products.txt") do P[#P + 1] = l end
for l in io.lines("run/bench/ids/hot_questions.txt") do Q[#Q + 1] = l end
local ops, seq = {}, 0

function init(args)
    for _, a in ipairs(args) do
        for op in string.gmatch(a, "[%w_]+") do ops[#ops + 1] = op end
    end
end

local function path(op)
    local p = P[math.random(#P)]
    if op == "product" then return "/products/" .. p end
    if op == "styles" then return "/products/" .. p .. "/styles" end
    if op == "related" then return "/products/" .. p .. "/related" end
    if op == "reviews" then return "/reviews/?product_id=" .. p .. "&page=1&count=5&sort=relevant" end
    if op == "meta" then return "/reviews/meta?product_id=" .. p end
    if op == "questions" then return "/qa/questions?product_id=" .. p .. "&page=1&count=5" end
    if op == "answers" then return "/qa/questions/" .. Q[math.random(#Q)] .. "/answers?page=1&count=5" end
    error("unknown op " .. op)
end

request = function()
    seq = seq + 1
    local op = ops[math.random(#ops)]
    return wrk.format("GET", path(op), {
        ["X-Request-Id"] = "bd." .. op .. "." .. seq,
        ["X-Real-IP"] = "127.0.0.1",
        ["X-Forwarded-For"] = "127.0.0.1",
        ["X-Forwarded-Proto"] = "http",
    })
end
