request = function()
  return wrk.format("GET", "/products/" .. math.random(1, 1000011) .. "/styles")
end
