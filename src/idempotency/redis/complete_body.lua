-- The failed set first: a key of another type there fails the script before it writes
-- anything (a completion written without its watermark would read as done when retried).
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'completed', 'completed_at_ms', fmt(now),
  'lease_until_ms', fmt(now))
redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, retention)))
