-- How many members of the failed set `set` (by first_seen_ms, then id) come up to and
-- including the event `id`: its rank, or, once it left the set, its place by its record's
-- first_seen_ms and id. Nil when it is neither in the set nor has a record.
local function failed_place(set, prefix, id)
  local rank = redis.call('ZRANK', set, id)
  if rank then
    return rank + 1
  end
  local seen = redis.call('HGET', prefix .. id, 'first_seen_ms')
  if not seen then
    return nil
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
  local place = redis.call('ZCOUNT', set, '-inf', '(' .. seen)
  for _, other in ipairs(redis.call('ZRANGEBYSCORE', set, seen, seen)) do
    if before(other, id) then
      place = place + 1
    end
  end
  return place
end
