-- ARGV: id, token, error, due ms.
-- After prelude_held.lua: the lease is checked, `m` is its message, `drop()` removes it; and
-- prelude_paused.lua: a retry of a type a pause holds waits paused.
drop()
redis.call('HSET', KEYS[8], 'e', ARGV[3])
if held(redis.call('HGET', KEYS[8], 't')) then
  hold(ARGV[1], KEYS[8], tonumber(ARGV[4]))
else
  redis.call('HSET', KEYS[8], 's', 's')
  redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[1])
end
return 1
