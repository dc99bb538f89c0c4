-- Before the fence check: a completion this fence made already (a retry whose first
-- answer was lost) is done.
do
  local c = redis.call('HMGET', job_key(ARGV[2]), 'state', 'fence')
  if c[1] == 'completed' and c[2] == ARGV[3] then
    return 1
  end
end
