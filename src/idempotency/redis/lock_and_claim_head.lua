local o = redis.call('HMGET', KEYS[3], 'holder', 'lock_until_ms', 'created', 'event_id')
local lock_until = tonumber(o[2]) or 0
if o[3] and not tonumber(o[3]) then
  return redis.error_reply('unreadable watermark in ' .. KEYS[3])
end
if o[1] and o[1] ~= ARGV[6] and lock_until > now then
  return {3, lock_until - now, '', ''}
end
local function claim()
