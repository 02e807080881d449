-- Keeps an operator's action. KEYS[8]: the list of recent actions. ARGV: the action (JSON),
-- how many to keep.
redis.call('LPUSH', KEYS[8], ARGV[1])
redis.call('LTRIM', KEYS[8], 0, tonumber(ARGV[2]) - 1)
return 1
