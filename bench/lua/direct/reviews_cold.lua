local sorts = {"newest", "helpful", "relevant"}
request = function()
  local p = math.random(1, 1000011)
  if math.random() < 0.25 then
    return wrk.format("GET", "/reviews/meta?product_id=" .. p)
  end
  return wrk.format("GET", "/reviews/?product_id=" .. p .. "&sort=" .. sorts[math.random(1,3)])
end
