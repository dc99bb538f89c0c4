stop(k, e, o)
local attempts = tonumber(redis.call('HGET', jk, 'attempts')) or 1
redis.call('HSET', jk, 'state', 'queued', 'attempts', fmt(math.max(attempts - 1, 0)),
  'run_at', fmt(now))
redis.call('ZADD', P .. 'queued', seq, k)
redis.call('ZADD', SINCE, fmt(now), k)
add_entry(k)
wake(o)
return 1
