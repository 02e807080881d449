-- ARGV: id, token.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it.
drop()
redis.call('HINCRBY', KEYS[6], 'a', -1)
redis.call('HSET', KEYS[6], 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', ARGV[1]))
return 1
