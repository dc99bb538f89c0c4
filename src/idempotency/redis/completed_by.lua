if h[1] == 'completed' and h[2] == ARGV[2] then
  return 1
end
