-- `count(kind, n)`: adds n to this minute's count of kind ('a' accepted, 'h' handled, 'f'
-- failed) in the ring of per-minute counts, the hash KEYS[8]: 64 slots (the minute modulo
-- 64), each `<slot>:m` (its minute) and `<slot>:a`, `:h`, `:f`. A slot of an older minute
-- starts again from zero; a write of a minute older than its slot's is dropped.
local function count(kind, n)
  if n == 0 then
    return
  end
  local minute = math.floor(now / 60000)
  local slot = minute % 64
  local held = tonumber(redis.call('HGET', KEYS[8], slot .. ':m'))
  if held ~= minute then
    if held and held > minute then
      return
    end
    redis.call('HSET', KEYS[8], slot .. ':m', minute, slot .. ':a', 0, slot .. ':h', 0,
      slot .. ':f', 0)
  end
  redis.call('HINCRBY', KEYS[8], slot .. ':' .. kind, n)
end
