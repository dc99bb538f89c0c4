-- ARGV[4] the error.
stop(k, e, o)
redis.call('HSET', jk, 'state', 'dead', 'last_error', ARGV[4], 'finished_at', fmt(now),
  'entry', '')
redis.call('ZADD', P .. 'dead', seq, k)
if o ~= '' then redis.call('ZREM', obj_key(o), member(seq, k)) end
wake(o)
return 1
