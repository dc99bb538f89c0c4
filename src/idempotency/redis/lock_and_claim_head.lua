local o = redis.call('HMGET', KEYS[3], 'holder', 'lock_until_ms', 'created', 'event_id')
local lock_until = tonumber(o[2]) or 0
if unreadable_created(o[3]) then
  return redis.error_reply('unreadable watermark in ' .. KEYS[3])
end
-- A completed event is a duplicate whatever the object's lock: nothing to wait for.
if o[1] and o[1] ~= ARGV[6] and lock_until > now
    and redis.call('HGET', KEYS[1], 'status') ~= 'completed' then
  return {3, lock_until - now, '', ''}
end
local function claim()
