local mine = redis.call('HMGET', KEYS[1], 'status', 'fence')
if mine[1] == 'completed' and mine[2] == ARGV[2] then
  return 1
end
