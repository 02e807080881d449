-- Checks the token; shared by the scripts that need the lease. KEYS[8] is the entry, ARGV[2]
-- the token. Leaves the stream message id in `m`.
local f = redis.call('HMGET', KEYS[8], 's', 'k', 'm')
if f[1] ~= 'q' or f[2] ~= ARGV[2] then return 0 end
local m = f[3]
local function drop()
  redis.pcall('XACK', KEYS[1], 'workers', m)
  redis.call('XDEL', KEYS[1], m)
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HDEL', KEYS[8], 'k', 'u', 'm')
end
