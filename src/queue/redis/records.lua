-- ARGV[2] 'one' and a key, 'recent' and a limit (newest first, from the `all` set of
-- every job by enqueue order), 'after', a state, a key and a limit (the state's jobs
-- after that key's: by its place in the state's set or, when it left the state, by its
-- enqueue number; a completed job is only placed in the completed set, ordered by when
-- jobs finished), or a state and a limit. Each record is the key, then the fields below.
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
elseif ARGV[2] == 'after' then
  local set, after, n = P .. ARGV[3], ARGV[4], tonumber(ARGV[5])
  local rank = redis.call('ZRANK', set, after)
  local seq = redis.call('ZSCORE', P .. 'all', after)
  if rank then
    keys = redis.call('ZRANGE', set, rank + 1, rank + n)
  elseif seq and ARGV[3] ~= 'completed' then
    keys = redis.call('ZRANGEBYSCORE', set, '(' .. seq, '+inf', 'LIMIT', 0, n)
  else
    keys = {}
  end
else
  keys = redis.call('ZRANGE', P .. ARGV[2], 0, tonumber(ARGV[3]) - 1)
end
for _, k in ipairs(keys) do
  out[#out + 1] = record(k)
end
return out
