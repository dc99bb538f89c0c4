local start = tonumber(ARGV[2])
local ids = redis.call('ZRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1)
local stale = {}
for _, id in ipairs(ids) do
  if redis.call('HGET', ARGV[1] .. id, 'status') ~= 'failed' then
    stale[#stale + 1] = id
  end
end
for i = 1, #stale, 500 do
  redis.call('ZREM', KEYS[1], unpack(stale, i, math.min(i + 499, #stale)))
end
return {#stale, #ids}
