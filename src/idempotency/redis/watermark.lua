local h = redis.call('HMGET', KEYS[1], 'created', 'event_id')
return {h[1] or '', h[2] or ''}
