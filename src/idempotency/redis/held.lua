-- The object's lock must still name this holder (even run out): another holder may
-- have applied a newer event meanwhile.
if redis.call('HGET', KEYS[3], 'holder') ~= ARGV[4] then
  return 0
end
