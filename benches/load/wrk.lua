-- Sends pre-signed deliveries (one "<signature>\t<body>" per line), each once, in order.
-- Usage: wrk -t1 ... -s wrk.lua <url> -- <requests.tsv>
--
-- run.sh uses one wrk thread: wrk loads each thread's script before starting the next
-- thread, so with several threads and a long list the first thread would get a head
-- start that the timed run does not count. One thread drives well over 20k req/s here.
-- If the run uses up the list it starts over (more duplicates than asked for), and
-- `done` says so: generate more lines.
local reqs = {}
local i = 0
wrapped = 0

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

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
end

function request()
  i = i + 1
  if i > #reqs then
    i = 1
    wrapped = wrapped + 1
  end
  return reqs[i]
end

function done(summary, latency, requests)
  local w = 0
  for _, t in ipairs(threads) do
    w = w + (t:get("wrapped") or 0)
  end
  if w > 0 then
    io.write(string.format("WRAPPED %d times: the list was too short for this run\n", w))
  end
end
