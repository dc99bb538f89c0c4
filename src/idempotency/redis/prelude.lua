local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%d', n) end
-- Whether a watermark's `created` (false: none) is not as the crate writes it, an integer
-- in decimal within `i64`, which the crate reads back (`tonumber` takes more: `1e3`,
-- `0x10`, ` 7`). Every `i64` the crate writes is readable.
local function unreadable_created(v)
  if not v then
    return false
  end
  local digits = string.match(v, '^%-?(%d+)$')
  if not digits or #digits > 19 then
    return true
  end
  -- Digit strings of one length compare as their numbers do.
  local limit = string.sub(v, 1, 1) == '-' and '9223372036854775808' or '9223372036854775807'
  return #digits == 19 and digits > limit
end
-- Whether the watermark `current` (false: none, or one not written in decimal) is to be
-- replaced by an event created at `created`: when that is at least `current`, compared
-- exactly (a Lua number is a double, exact to 15 digits only; a `created` may have 18).
local function moves_forward(created, current)
  if not current or not string.match(current, '^%-?%d+$') then
    return true
  end
  -- The digits above the last nine, and the last nine, each exact as a double.
  local function parts(v)
    local neg = string.sub(v, 1, 1) == '-'
    local digits = neg and string.sub(v, 2) or v
    local hi = tonumber(string.sub(digits, 1, -10)) or 0
    local lo = tonumber(string.sub(digits, -9)) or 0
    if neg then
      return -hi, -lo
    end
    return hi, lo
  end
  local ah, al = parts(created)
  local bh, bl = parts(current)
  if ah ~= bh then
    return ah > bh
  end
  return al >= bl
end
