local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%d', n) end
-- Whether a watermark's `created` (false: none) is not as the crate writes it, an integer
-- in decimal the crate reads back (`tonumber` takes more: `1e3`, `0x10`, ` 7`).
local function unreadable_created(v)
  return v and (not string.match(v, '^%-?%d+$') or #v > 18)
end
