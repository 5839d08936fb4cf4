local kinds = {"", "/styles", "/related"}
request = function()
  local p = 900000 + math.random(1, 1000)
  return wrk.format("GET", "/products/" .. p .. kinds[math.random(1,3)])
end
