if moves_forward(ARGV[1], redis.call('HGET', KEYS[1], 'created')) then
  redis.call('HSET', KEYS[1], 'created', ARGV[1], 'event_id', ARGV[2])
end
-- A reconciler's cursor (ARGV[4] = '1') is kept however long no pass moves it.
if ARGV[4] == '1' then
  redis.call('PERSIST', KEYS[1])
  return 1
end
-- The watermark lives for the retention from now at least. A longer TTL stays: a live
-- lock's (its lease and the retention). A lock left by a holder that never unlocked
-- keeps its `holder` field, so its TTL, set when it locked, can be near its end.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
