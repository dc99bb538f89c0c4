local r = claim()
if r.err then
  return r
end
if r[1] ~= 2 then
  return {r[1], r[2], '', ''}
end
redis.call('HSET', KEYS[3], 'holder', ARGV[6], 'lock_until_ms', fmt(now + tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[3], fmt(math.max(1, tonumber(ARGV[3]) + tonumber(ARGV[5]))))
return {2, r[2], o[3] or '', o[4] or ''}
