-- Shared by the scripts that make entries wait: `held(t)`, whether a pause holds entries of
-- type `t` (KEYS[7], a hash of the pauses in force by key: `*`, or `type:` and the type, to
-- when each was made), and `hold(id, e, due)`, which makes the entry `id` (its hash `e`)
-- paused: out of the stream and the scheduled set, in KEYS[6] by the time it is or was due.
local function held(t)
  if redis.call('HLEN', KEYS[7]) == 0 then return false end
  return redis.call('HEXISTS', KEYS[7], '*') == 1 or
    redis.call('HEXISTS', KEYS[7], 'type:' .. (t or '')) == 1
end
local function hold(id, e, due)
  redis.call('HSET', e, 's', 'h')
  redis.call('HDEL', e, 'k', 'u', 'm')
  redis.call('ZADD', KEYS[6], due, id)
end
