local until_ms = fmt(now + tonumber(ARGV[4]))
redis.call('HSET', jk, 'run_at', until_ms)
redis.call('ZADD', LEASES, until_ms, k)
if o ~= '' then redis.call('ZADD', objrun_key(o), until_ms, k) end
return 1
