-- ARGV[2] the age in ms, ARGV[3] the batch size.
local keys = redis.call('ZRANGEBYSCORE', P .. 'completed', '-inf', fmt(now - tonumber(ARGV[2])),
  'LIMIT', 0, tonumber(ARGV[3]))
for _, k in ipairs(keys) do
  if redis.call('HGET', job_key(k), 'state') == 'completed' then
    redis.call('DEL', job_key(k))
    redis.call('ZREM', P .. 'all', k)
  end
  redis.call('ZREM', P .. 'completed', k)
end
return #keys
