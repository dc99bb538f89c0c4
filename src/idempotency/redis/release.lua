-- The failed set first: a key of another type there fails the script before it writes
-- anything (a record marked failed but missing from the set would never be listed).
local first = tonumber(redis.call('HGET', KEYS[1], 'first_seen_ms')) or now
redis.call('ZADD', KEYS[2], fmt(first), ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'failed', 'last_error', ARGV[4],
  'lease_until_ms', fmt(now))
redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, retention)))
return 1
