-- ARGV: id, token, error, due ms.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it.
drop()
redis.call('HSET', KEYS[6], 's', 's', 'e', ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
return 1
