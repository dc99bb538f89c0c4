local k = ARGV[2]
local jk = job_key(k)
if redis.call('EXISTS', jk) == 1 then
  return 0
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', jk, 'event_id', ARGV[3], 'type', ARGV[4], 'kind', ARGV[5], 'object', ARGV[6],
  'created', ARGV[7], 'body', ARGV[8], 'state', 'queued', 'attempts', '0', 'fence', '',
  'run_at', fmt(now), 'enqueued_at', fmt(now), 'seq', fmt(seq))
redis.call('ZADD', P .. 'queued', seq, k)
redis.call('ZADD', SINCE, fmt(now), k)
redis.call('ZADD', P .. 'all', seq, k)
if ARGV[6] ~= '' then
  redis.call('ZADD', obj_key(ARGV[6]), ARGV[7], member(seq, k))
end
add_entry(k)
return 1
