local out = {}
for _, s in ipairs({'queued', 'running', 'retrying', 'dead', 'completed'}) do
  out[#out + 1] = redis.call('ZCARD', P .. s)
end
local age = -1
local first = redis.call('ZRANGE', P .. 'queued', 0, 0)[1]
if first then
  local at = tonumber(redis.call('HGET', job_key(first), 'enqueued_at'))
  if at then age = math.max(now - at, 0) end
end
out[#out + 1] = age
return out
