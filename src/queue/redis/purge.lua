-- ARGV[2] the age in ms, ARGV[3] the batch size.
-- Returns how many jobs it deleted. A member of the completed set whose job is gone or no
-- longer completed is dropped from the set and not counted; the script then looks further,
-- up to four batches' worth of members, so that a caller looping while it returns the
-- batch size does not stop early on such members.
local limit = tonumber(ARGV[3])
local deleted, examined = 0, 0
while deleted < limit and examined < 4 * limit do
  local keys = redis.call('ZRANGEBYSCORE', P .. 'completed', '-inf', fmt(now - tonumber(ARGV[2])),
    'LIMIT', 0, limit - deleted)
  if #keys == 0 then break end
  for _, k in ipairs(keys) do
    examined = examined + 1
    if redis.call('HGET', job_key(k), 'state') == 'completed' then
      redis.call('DEL', job_key(k))
      redis.call('ZREM', P .. 'all', k)
      deleted = deleted + 1
    end
    redis.call('ZREM', P .. 'completed', k)
  end
end
return deleted
