local h = redis.call('HMGET', KEYS[1], 'status', 'fence')
