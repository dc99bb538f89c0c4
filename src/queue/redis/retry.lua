-- ARGV[4] the error, ARGV[5] the delay in ms.
stop(k, e, o)
local at = fmt(now + tonumber(ARGV[5]))
redis.call('HSET', jk, 'state', 'retrying', 'last_error', ARGV[4], 'run_at', at, 'entry', '')
redis.call('ZADD', P .. 'retrying', seq, k)
redis.call('ZADD', DELAYED, at, k)
wake(o)
return 1
