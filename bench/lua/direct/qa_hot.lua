request = function()
  if math.random() < 0.5 then
    return wrk.format("GET", "/qa/questions?product_id=" .. (900000 + math.random(1, 1000)))
  end
  return wrk.format("GET", "/qa/questions/" .. (3000000 + math.random(1, 1000)) .. "/answers")
end
