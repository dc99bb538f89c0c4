-- How many members of the failed set (KEYS[1], by first_seen_ms, then id) come up to and
-- including the event ARGV[2]: its rank, or, once it left the set, its place by its
-- record's first_seen_ms and id. Nil when the store no longer has its record.
local rank = redis.call('ZRANK', KEYS[1], ARGV[2])
if rank then
  return rank + 1
end
local seen = redis.call('HGET', ARGV[1] .. ARGV[2], 'first_seen_ms')
if not seen then
  return false
end
-- Byte order, as the sorted set orders members of one score (Lua's `<` follows the
-- server's locale).
local function before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
local place = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. seen)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], seen, seen)) do
  if before(id, ARGV[2]) then
    place = place + 1
  end
end
return place
