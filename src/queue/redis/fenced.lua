-- ARGV[2] the job's key, ARGV[3] the token's fence, then each script's own.
local k = ARGV[2]
local jk = job_key(k)
local h = redis.call('HMGET', jk, 'state', 'fence', 'entry', 'object', 'seq')
if h[1] ~= 'running' or h[2] ~= ARGV[3] then
  return 0
end
local e, o, seq = h[3] or '', h[4] or '', h[5]
