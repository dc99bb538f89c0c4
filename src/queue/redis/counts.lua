local out = {}
for _, s in ipairs({'queued', 'running', 'retrying', 'dead', 'completed'}) do
  out[#out + 1] = redis.call('ZCARD', P .. s)
end
-- The age of the oldest queued job, from when it was queued last. A member whose job is
-- not queued (none should be) is dropped as it is met, a bounded number per call.
local age = -1
for _ = 1, 100 do
  local head = redis.call('ZRANGE', SINCE, 0, 0, 'WITHSCORES')
  if #head == 0 then break end
  if redis.call('HGET', job_key(head[1]), 'state') == 'queued' then
    age = math.max(now - tonumber(head[2]), 0)
    break
  end
  redis.call('ZREM', SINCE, head[1])
end
out[#out + 1] = age
return out
