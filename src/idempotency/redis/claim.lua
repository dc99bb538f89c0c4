local lease = tonumber(ARGV[3])
-- A key of another type where the failed set goes would fail the `ZREM` below after the
-- record was written (a script's earlier writes stay): refused before any write.
local failed_type = redis.call('TYPE', KEYS[2])['ok']
if failed_type ~= 'zset' and failed_type ~= 'none' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[2] .. ' is not the failed set')
end
local h = redis.call('HMGET', KEYS[1], 'status', 'lease_until_ms')
local status = h[1]
if status == 'completed' then
  return {0, 0}
end
if status == 'processing' then
  local until_ms = tonumber(h[2]) or 0
  if until_ms > now then
    return {1, until_ms - now}
  end
elseif status == false then
  -- HSET first: Redis out of memory (noeviction) refuses a script's first write when it
  -- grows memory, and lets every write after any first one through, so a DEL first
  -- would claim the event however full Redis is.
  redis.call('HSET', KEYS[1], 'type', ARGV[2], 'attempts', '0', 'first_seen_ms', fmt(now))
  if redis.call('HLEN', KEYS[1]) > 3 then
    -- A hash without a status, not this store's: start it over.
    redis.call('DEL', KEYS[1])
    redis.call('HSET', KEYS[1], 'type', ARGV[2], 'attempts', '0', 'first_seen_ms', fmt(now))
  end
elseif status ~= 'failed' then
  return redis.error_reply('unreadable status in ' .. KEYS[1])
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'processing', 'fence', ARGV[4],
  'lease_until_ms', fmt(now + lease))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], fmt(math.max(1, lease + tonumber(ARGV[5]))))
return {2, attempts}
