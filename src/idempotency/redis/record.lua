return redis.call('HMGET', KEYS[1], 'status', 'type', 'attempts', 'last_error',
  'first_seen_ms', 'completed_at_ms')
