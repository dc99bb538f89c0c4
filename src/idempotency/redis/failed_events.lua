local limit = tonumber(ARGV[2])
local found, start = 0, tonumber(ARGV[3])
-- Given an event id (ARGV[4]), from just after its place instead, found in this same
-- script, so that no other walk's removals move the set in between.
if ARGV[4] and ARGV[4] ~= '' then
  start = failed_place(KEYS[1], ARGV[1], ARGV[4])
  if not start then
    return {'0', ''}
  end
end
local out, stale = {'0', tostring(start)}, {}
local first = start
-- At most this many set members per call, stale ones included (each call drops those it
-- meets): a set that was never purged must not stall the server in one script. The
-- first element of the answer is '1' when it stopped for that reason, and the caller
-- goes on from where it got to; the second is where this call started ('' when the
-- event of ARGV[4] is gone).
local budget = first + limit + 10000
while found < limit do
  if start >= budget then
    out[1] = '1'
    break
  end
  local ids = redis.call('ZRANGE', KEYS[1], start, start + math.min(100, budget - start) - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', ARGV[1] .. id, 'status', 'type', 'attempts', 'last_error',
      'first_seen_ms', 'completed_at_ms')
    if h[1] == 'failed' then
      if found < limit then
        found = found + 1
        out[#out + 1] = id
        for i = 1, 6 do out[#out + 1] = h[i] end
      end
    else
      stale[#stale + 1] = id
    end
  end
  start = start + #ids
end
for i = 1, #stale, 500 do
  redis.call('ZREM', KEYS[1], unpack(stale, i, math.min(i + 499, #stale)))
end
return out
