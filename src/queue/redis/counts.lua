local out = {}
for _, s in ipairs({'queued', 'running', 'retrying', 'dead', 'completed'}) do
  out[#out + 1] = redis.call('ZCARD', P .. s)
end
-- The age of the oldest queued job, from when it was queued last (its `run_at`: enqueued,
-- released or requeued then). The set is in enqueue order, and a requeued job keeps its
-- place, so the first 100 are read (bounded work).
local age = -1
local oldest = nil
for _, k in ipairs(redis.call('ZRANGE', P .. 'queued', 0, 99)) do
  local h = redis.call('HMGET', job_key(k), 'run_at', 'enqueued_at')
  local at = tonumber(h[1]) or tonumber(h[2])
  if at and (not oldest or at < oldest) then oldest = at end
end
if oldest then age = math.max(now - oldest, 0) end
out[#out + 1] = age
return out
