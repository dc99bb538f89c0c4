if h[1] ~= 'processing' or h[2] ~= ARGV[2] then
  return 0
end
local retention = tonumber(ARGV[3])
