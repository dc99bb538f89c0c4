-- ARGV[2] 'one' and a key, 'recent' and a limit (newest first, from the `all` set of
-- every job by enqueue order), or a state and a limit. Each record is the key, then the
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
local keys
if ARGV[2] == 'recent' then
  keys = redis.call('ZREVRANGE', P .. 'all', 0, tonumber(ARGV[3]) - 1)
else
  keys = redis.call('ZRANGE', P .. ARGV[2], 0, tonumber(ARGV[3]) - 1)
end
for _, k in ipairs(keys) do
  out[#out + 1] = record(k)
end
return out
