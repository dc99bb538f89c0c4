local before = now - tonumber(ARGV[1])
local retention = tonumber(ARGV[3])
local plen = string.len(ARGV[4])
local n = 0
for i = 5, #ARGV do
  local key = ARGV[i]
  local id = string.sub(key, plen + 1)
  -- An id with a `:` is another store's key under a longer prefix (`{prefix}:evt:…`).
  -- Only hashes: anything else under the prefix is not a record of this store.
  if not string.find(id, ':', 1, true) and redis.call('TYPE', key).ok == 'hash' then
    local h = redis.call('HMGET', key, 'status', 'lease_until_ms', 'first_seen_ms')
    local until_ms = tonumber(h[2])
    if h[1] == 'processing' and until_ms ~= nil and until_ms < before then
      -- The failed set first, as on release: a wrong-typed set fails before any write.
      redis.call('ZADD', KEYS[1], fmt(tonumber(h[3]) or now), id)
      redis.call('HSET', key, 'status', 'failed', 'last_error', ARGV[2],
        'lease_until_ms', fmt(now))
      redis.call('PEXPIRE', key, fmt(math.max(1, retention)))
      n = n + 1
    end
  end
end
return n
