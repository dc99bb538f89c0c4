-- ARGV[2] 'one' and a key, or a state and a limit. Each record is the key, then the
-- fields below.
local function record(k)
  local r = redis.call('HMGET', job_key(k), 'event_id', 'type', 'kind', 'state', 'attempts',
    'last_error', 'enqueued_at', 'run_at', 'finished_at', 'body')
  table.insert(r, 1, k)
  return r
end
if ARGV[2] == 'one' then
  return {record(ARGV[3])}
end
local out = {}
for _, k in ipairs(redis.call('ZRANGE', P .. ARGV[2], 0, tonumber(ARGV[3]) - 1)) do
  out[#out + 1] = record(k)
end
return out
