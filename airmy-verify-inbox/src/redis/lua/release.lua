-- ARGV: id, token.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it; and
-- prelude_paused.lua: an entry of a type a pause holds is given back paused.
drop()
redis.call('HINCRBY', KEYS[8], 'a', -1)
if held(redis.call('HGET', KEYS[8], 't')) then
  hold(ARGV[1], KEYS[8], now)
else
  redis.call('HSET', KEYS[8], 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', ARGV[1]))
end
return 1
