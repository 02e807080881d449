-- ARGV: entry key prefix, limit. Dead letters newest first: id, type, attempts, error,
-- received ms, died ms.
local out = {}
for _, msg in ipairs(redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[2])) do
  local id = msg[2][2]
  local f = redis.call('HMGET', ARGV[1] .. id, 't', 'a', 'e', 'r', 'z')
  if f[1] then
    for _, v in ipairs({id, f[1], f[2], f[3] or '', f[4], f[5]}) do out[#out + 1] = v end
  end
end
return out
