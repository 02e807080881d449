-- Completes a batch. ARGV: entry key prefix, then id and token pairs. 1 (done) or 0 (the
-- token no longer holds the lease) for each.
local out, msgs, ids, scored = {}, {}, {}, {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local e = ARGV[1] .. id
  local f = redis.call('HMGET', e, 's', 'k', 'm')
  if f[1] == 'q' and f[2] == ARGV[i + 1] then
    msgs[#msgs + 1] = f[3]
    ids[#ids + 1] = id
    scored[#scored + 1] = now
    scored[#scored + 1] = id
    redis.call('HDEL', e, 'k', 'u', 'm')
    redis.call('HSET', e, 's', 'd', 'z', now)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #msgs > 0 then
  redis.pcall('XACK', KEYS[1], 'workers', unpack(msgs))
  redis.call('XDEL', KEYS[1], unpack(msgs))
  redis.call('ZREM', KEYS[5], unpack(ids))
  redis.call('ZADD', KEYS[4], unpack(scored))
end
count('h', #ids)
return out
