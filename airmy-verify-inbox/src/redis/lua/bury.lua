-- ARGV: id, token, error.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it.
drop()
local dm = redis.call('XADD', KEYS[3], '*', 'i', ARGV[1])
redis.call('HSET', KEYS[8], 's', 'x', 'e', ARGV[3], 'z', now, 'dm', dm)
return 1
