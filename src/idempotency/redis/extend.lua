local lease = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'lease_until_ms', fmt(now + lease))
redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, lease + retention)))
return 1
