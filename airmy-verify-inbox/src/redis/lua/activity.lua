-- The last hour of the ring of per-minute counts (KEYS[8], see prelude_count.lua): the
-- server's minute, then minute, accepted, handled, failed for each slot holding a minute of
-- the hour.
local current = math.floor(now / 60000)
local out = {current}
for slot = 0, 63 do
  local f = redis.call('HMGET', KEYS[8], slot .. ':m', slot .. ':a', slot .. ':h', slot .. ':f')
  local minute = tonumber(f[1])
  if minute and minute > current - 60 and minute <= current then
    out[#out + 1] = minute
    out[#out + 1] = tonumber(f[2]) or 0
    out[#out + 1] = tonumber(f[3]) or 0
    out[#out + 1] = tonumber(f[4]) or 0
  end
end
return out
