-- ARGV[1] is the queue's key prefix, `{prefix}:q:`; every key is built from it.
local P = ARGV[1]
local STREAM, GROUP = P .. 'stream', 'workers'
local DELAYED, LEASES = P .. 'delayed', P .. 'leases'
-- Queued jobs by when they were queued last (enqueued, released, requeued or back from a
-- lost lease), for the age of the oldest: `{prefix}:q:queued` keeps enqueue order, in
-- which a requeued job keeps its place.
local SINCE = P .. 'queued_since'
local function job_key(k) return P .. 'job:' .. k end
local function obj_key(o) return P .. 'obj:' .. o end
local function objrun_key(o) return P .. 'objrun:' .. o end
-- Whether `v` (false: none) is a whole number as the scripts write one, which `HINCRBY`
-- and the object sets' members take.
local function digits(v) return v and string.match(v, '^%d+$') and #v <= 18 end
-- Whether `v` is a stream entry id (`1700000000000-0`), as XADD makes them: another
-- value fails XCLAIM and XACK, and with them the script.
local function entry_id(v) return v and string.match(v, '^%d+%-%d+$') end
-- A job's member in its object's set: same-`created` jobs sort by enqueue order.
local function member(seq, k) return string.format('%020d', tonumber(seq)) .. ':' .. k end
-- Acknowledges and deletes a stream entry ('' is none).
local function ack(e)
  if entry_id(e) then
    redis.call('XACK', STREAM, GROUP, e)
    redis.call('XDEL', STREAM, e)
  end
end
-- Gives the job a new stream entry, for any consumer to read.
local function add_entry(k)
  local e = redis.call('XADD', STREAM, '*', 'key', k)
  redis.call('HSET', job_key(k), 'entry', e)
  return e
end
-- The job stops running: its entry is acked and its lease forgotten.
local function stop(k, e, o)
  ack(e)
  redis.call('ZREM', P .. 'running', k)
  redis.call('ZREM', LEASES, k)
  if o ~= '' then redis.call('ZREM', objrun_key(o), k) end
end
-- Gives the first pending job of object `o` an entry again if a take parked it.
local function wake(o)
  if o == '' then return end
  local head = redis.call('ZRANGE', obj_key(o), 0, 0)[1]
  if not head then return end
  local k = string.sub(head, 22)
  local h = redis.call('HMGET', job_key(k), 'state', 'entry')
  if (h[1] == 'queued' or h[1] == 'retrying') and (h[2] or '') == ''
      and not redis.call('ZSCORE', DELAYED, k) then
    add_entry(k)
  end
end
