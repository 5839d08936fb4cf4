request = function()
  return wrk.format("GET", "/qa/questions?product_id=" .. math.random(1, 1000011))
end
