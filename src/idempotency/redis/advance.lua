local created = tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'created'))
if current == nil or created >= current then
  redis.call('HSET', KEYS[1], 'created', ARGV[1], 'event_id', ARGV[2])
end
if redis.call('HEXISTS', KEYS[1], 'holder') == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
