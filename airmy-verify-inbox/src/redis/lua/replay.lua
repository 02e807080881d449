-- ARGV: entry key prefix, ids. For each id: 1 replayed (or already due), 2 being processed,
-- 0 unknown. An entry of a type a pause holds is replayed paused (due at once when resumed);
-- a paused one stays paused, due at once.
local out = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local e = ARGV[1] .. id
  local f = redis.call('HMGET', e, 's', 'dm', 't')
  local s = f[1]
  if not s then
    out[#out + 1] = 0
  elseif s == 'q' then
    out[#out + 1] = 2
  elseif s == 'h' then
    local due = tonumber(redis.call('ZSCORE', KEYS[6], id) or now)
    redis.call('ZADD', KEYS[6], math.min(due, now), id)
    out[#out + 1] = 1
  elseif s == 'p' then
    -- Due already; if its message was lost (the stream deleted or evicted), add it again.
    local m = redis.call('HGET', e, 'm')
    if not m or not redis.call('XRANGE', KEYS[1], m, m)[1] then
      redis.call('HSET', e, 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    end
    out[#out + 1] = 1
  else
    if s == 'x' then
      redis.call('XDEL', KEYS[3], f[2])
    elseif s == 'd' then
      redis.call('ZREM', KEYS[4], id)
    else
      redis.call('ZREM', KEYS[2], id)
    end
    if s ~= 's' then
      redis.call('HSET', e, 'a', 0)
      redis.call('HDEL', e, 'e', 'z', 'dm')
    end
    if held(f[3]) then
      hold(id, e, now)
    else
      redis.call('HSET', e, 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    end
    out[#out + 1] = 1
  end
end
return out
