-- Cycles through pre-signed deliveries (one "<signature>\t<body>" per line).
local reqs = {}
local i = 0

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local tab = line:find("\t", 1, true)
    if tab then
      reqs[#reqs + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json; charset=utf-8",
        ["Stripe-Signature"] = line:sub(1, tab - 1),
      }, line:sub(tab + 1))
    end
  end
  f:close()
  -- Each thread starts at a different offset.
  i = math.random(#reqs)
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

local statuses = {}
function response(status)
  statuses[status] = (statuses[status] or 0) + 1
end
