-- ARGV[2] 'one' and a key, or 'dead', a batch size and the last seq a batch before looked
-- at (so a job buried again meanwhile, under its old seq, is not requeued twice in one
-- call). Returns {requeued, looked at, last seq looked at}. A job whose hash cannot be
-- requeued as it is (no numeric seq, or an object without a numeric created: written by
-- hand or by another version) stays dead, and nothing is written for it.
local function requeue(k)
  local jk = job_key(k)
  local h = redis.call('HMGET', jk, 'state', 'entry', 'object', 'created', 'seq')
  local state = h[1]
  if state ~= 'dead' and state ~= 'retrying' then
    return 0
  end
  -- `created` as the scripts write it (`tonumber` takes ` 7` and `nan`, which ZADD
  -- refuses).
  local created = h[4] and string.match(h[4], '^%-?%d+$') and #h[4] <= 19
  if not digits(h[5]) or ((h[3] or '') ~= '' and not created) then
    return 2
  end
  ack(h[2] or '')
  redis.call('ZREM', P .. state, k)
  redis.call('ZREM', DELAYED, k)
  redis.call('ZADD', P .. 'queued', h[5], k)
  redis.call('ZADD', SINCE, fmt(now), k)
  redis.call('HSET', jk, 'state', 'queued', 'attempts', '0', 'run_at', fmt(now), 'entry', '')
  redis.call('HDEL', jk, 'finished_at')
  local o = h[3] or ''
  if o ~= '' then redis.call('ZADD', obj_key(o), h[4], member(h[5], k)) end
  add_entry(k)
  return 1
end
if ARGV[2] == 'one' then
  -- 2: unreadable, kept dead (the caller says so).
  return {requeue(ARGV[3]), 1, 0}
end
local n = 0
local last = tonumber(ARGV[4])
local keys = redis.call('ZRANGEBYSCORE', P .. 'dead', '(' .. ARGV[4], '+inf', 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #keys, 2 do
  local k = keys[i]
  last = tonumber(keys[i + 1])
  local r = requeue(k)
  if r == 1 then
    n = n + 1
  elseif r == 0 then
    redis.call('ZREM', P .. 'dead', k)
  end
end
return {n, #keys / 2, last}
