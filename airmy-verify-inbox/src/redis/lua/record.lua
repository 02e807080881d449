-- Keeps an operator's action. KEYS[9]: the list of recent actions. ARGV: the action (JSON),
-- how many to keep.
redis.call('LPUSH', KEYS[9], ARGV[1])
redis.call('LTRIM', KEYS[9], 0, tonumber(ARGV[2]) - 1)
return 1
