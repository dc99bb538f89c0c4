if moves_forward(ARGV[5], redis.call('HGET', KEYS[3], 'created')) then
  redis.call('HSET', KEYS[3], 'created', ARGV[5], 'event_id', ARGV[6])
end
redis.call('HDEL', KEYS[3], 'holder', 'lock_until_ms')
redis.call('PEXPIRE', KEYS[3], fmt(math.max(1, retention)))
return 1
