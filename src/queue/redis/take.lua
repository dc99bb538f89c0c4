local me, lease, ordered = ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
local max, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
-- ARGV[6 + i] is the fence of the i-th job taken.
local made = redis.pcall('XGROUP', 'CREATE', STREAM, GROUP, '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(made.err)
end
local out = {}

-- Takes the job if its entry `e` is current and it is due (and, with per-object order,
-- first of its object with no other job of it running); parks it if it must wait for
-- its object; acks a stale entry.
local function consider(k, e)
  local jk = job_key(k)
  local h = redis.call('HMGET', jk, 'state', 'entry', 'run_at', 'object', 'seq', 'attempts')
  local state, current = h[1], h[2] or ''
  if not state or current ~= e or state == 'completed' or state == 'dead' then
    ack(e)
    if state and current == e then redis.call('HSET', jk, 'entry', '') end
    return
  end
  -- A job whose hash this script cannot use (written by hand, or by another version) is
  -- buried as it is, before anything is written for it: an error further on would
  -- stop the script with the jobs it took so far marked running, and out of reach until
  -- their leases ended.
  local known = {queued = true, running = true, retrying = true}
  if not digits(h[5]) or (h[6] and not digits(h[6])) or not known[state]
      or (current ~= '' and not entry_id(current)) then
    ack(e)
    if known[state] then redis.call('ZREM', P .. state, k) end
    redis.call('ZREM', SINCE, k)
    redis.call('ZREM', LEASES, k)
    redis.call('HSET', jk, 'state', 'dead', 'entry', '', 'finished_at', fmt(now),
      'last_error', 'unreadable job: its seq, attempts, state or entry is not as this version writes them')
    -- Scored by its seq when that can be read as the scripts write it, else 0 (`tonumber`
    -- takes `nan`, which ZADD refuses).
    redis.call('ZADD', P .. 'dead', digits(h[5]) and h[5] or '0', k)
    -- Out of its object's order, which it would otherwise hold up for good.
    local o = h[4] or ''
    if o ~= '' then
      for _, m in ipairs(redis.call('ZRANGE', obj_key(o), 0, -1)) do
        if string.sub(m, 22) == k then redis.call('ZREM', obj_key(o), m) end
      end
      redis.call('ZREM', objrun_key(o), k)
      wake(o)
    end
    return
  end
  local run_at = tonumber(h[3]) or 0
  if state == 'running' and run_at > now then
    return
  end
  if state == 'retrying' and run_at > now then
    ack(e)
    redis.call('HSET', jk, 'entry', '')
    redis.call('ZADD', DELAYED, fmt(run_at), k)
    return
  end
  local o, seq = h[4] or '', h[5]
  if ordered and o ~= '' then
    local mine = member(seq, k)
    local head = redis.call('ZRANGE', obj_key(o), 0, 0)[1]
    local busy = head ~= mine
    if not busy then
      local live = redis.call('ZRANGEBYSCORE', objrun_key(o), '(' .. fmt(now), '+inf', 'LIMIT', 0, 2)
      for _, r in ipairs(live) do
        if r ~= k then busy = true end
      end
    end
    if busy then
      ack(e)
      redis.call('HSET', jk, 'entry', '')
      if state == 'running' then
        -- Its lease ended: it waits as queued, and no longer holds its object.
        stop(k, '', o)
        redis.call('HSET', jk, 'state', 'queued', 'run_at', fmt(now))
        redis.call('ZADD', P .. 'queued', seq, k)
        redis.call('ZADD', SINCE, fmt(now), k)
        if head ~= mine then wake(o) end
      end
      return
    end
  end
  local i = #out + 1
  local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
  local until_ms = fmt(now + lease)
  redis.call('HSET', jk, 'state', 'running', 'fence', ARGV[6 + i], 'run_at', until_ms)
  if state ~= 'running' then
    redis.call('ZREM', P .. state, k)
    redis.call('ZREM', SINCE, k)
    redis.call('ZADD', P .. 'running', seq, k)
  end
  redis.call('ZADD', LEASES, until_ms, k)
  if o ~= '' then redis.call('ZADD', objrun_key(o), until_ms, k) end
  local f = redis.call('HMGET', jk, 'event_id', 'type', 'kind', 'body', 'created')
  out[i] = {i, k, f[1] or '', f[2] or '', f[3] or '', f[4] or '', attempts, tonumber(f[5]) or 0}
end

local function consider_entry(entry)
  local fields = entry[2]
  if type(fields) == 'table' and fields[1] == 'key' and fields[2] then
    consider(fields[2], entry[1])
  else
    ack(entry[1])
  end
end

-- Retrying jobs whose time came go back into the stream.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', fmt(now), 'LIMIT', 0, budget)) do
  redis.call('ZREM', DELAYED, k)
  if redis.call('HGET', job_key(k), 'state') == 'retrying' then
    add_entry(k)
  end
end

-- Leases that ended by the server's clock: their entries move to this consumer.
for _, k in ipairs(redis.call('ZRANGEBYSCORE', LEASES, '-inf', fmt(now), 'LIMIT', 0, max)) do
  if #out >= max then break end
  local e = redis.call('HGET', job_key(k), 'entry')
  if e and e ~= '' then
    -- An entry id that is not one is buried by `consider`, not claimed.
    if entry_id(e) then redis.call('XCLAIM', STREAM, GROUP, me, 0, e, 'JUSTID') end
    consider(k, e)
  else
    redis.call('ZREM', LEASES, k)
  end
end

-- Entries a consumer read and kept longer than a lease (a consumer that died).
if #out < max then
  local claimed = redis.call('XAUTOCLAIM', STREAM, GROUP, me, ARGV[3], '0-0', 'COUNT', max - #out)
  for _, entry in ipairs(claimed[2]) do
    consider_entry(entry)
  end
end

-- New entries, until `max` jobs are taken or `budget` entries were looked at.
local scanned = 0
while #out < max and scanned < budget do
  local read = redis.call('XREADGROUP', 'GROUP', GROUP, me, 'COUNT', max - #out,
    'STREAMS', STREAM, '>')
  if not read or not read[1] or #read[1][2] == 0 then break end
  for _, entry in ipairs(read[1][2]) do
    scanned = scanned + 1
    consider_entry(entry)
  end
end
return out
