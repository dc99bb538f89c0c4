stop(k, e, o)
redis.call('HSET', jk, 'state', 'completed', 'finished_at', fmt(now), 'run_at', fmt(now),
  'entry', '')
redis.call('ZADD', P .. 'completed', fmt(now), k)
if o ~= '' then redis.call('ZREM', obj_key(o), member(seq, k)) end
wake(o)
return 1
