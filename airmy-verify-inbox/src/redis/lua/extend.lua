-- ARGV: id, token, lease ms, consumer.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it.
local u = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[8], 'u', u)
redis.call('ZADD', KEYS[5], u, ARGV[1])
redis.pcall('XCLAIM', KEYS[1], 'workers', ARGV[4], 0, m, 'JUSTID')
return 1
