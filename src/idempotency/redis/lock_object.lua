local h = redis.call('HMGET', KEYS[1], 'holder', 'lock_until_ms', 'created', 'event_id')
local until_ms = tonumber(h[2]) or 0
-- Refused before the lock is taken, which would otherwise stay to its lease's end.
if unreadable_created(h[3]) then
  return redis.error_reply('unreadable watermark in ' .. KEYS[1])
end
if h[1] and h[1] ~= ARGV[1] and until_ms > now then
  return {'busy', fmt(until_ms - now), ''}
end
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'lock_until_ms', fmt(now + lease))
redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, lease + tonumber(ARGV[3]))))
return {'ok', h[3] or '', h[4] or ''}
