-- Accepts a batch. ARGV: entry key prefix, max unfinished, whether to write a duplicate again
-- ('1' with replicas to wait for: the script is then replicated, and the WAIT after it covers
-- the entry's first write, even one made on another connection), then id, type, body triples.
-- For each: 1 stored, 0 duplicate (an id seen earlier in the batch included), -1 full. A
-- delivery of a type a pause holds is stored paused.
local room = tonumber(ARGV[2]) - redis.call('XLEN', KEYS[1]) - redis.call('ZCARD', KEYS[2]) -
  redis.call('ZCARD', KEYS[6])
local out = {}
for i = 4, #ARGV, 3 do
  local e = ARGV[1] .. ARGV[i]
  if redis.call('EXISTS', e) == 1 then
    if ARGV[3] == '1' then
      -- Unchanged, but a write: replicated after the entry's own.
      redis.call('HSET', e, 't', redis.call('HGET', e, 't'))
    end
    out[#out + 1] = 0
  elseif room <= 0 then
    out[#out + 1] = -1
  elseif held(ARGV[i + 1]) then
    redis.call('HSET', e, 't', ARGV[i + 1], 'b', ARGV[i + 2], 'r', now, 'a', 0, 's', 'h')
    redis.call('ZADD', KEYS[6], now, ARGV[i])
    room = room - 1
    out[#out + 1] = 1
  else
    local m = redis.call('XADD', KEYS[1], '*', 'i', ARGV[i])
    redis.call('HSET', e, 't', ARGV[i + 1], 'b', ARGV[i + 2], 'r', now, 'a', 0, 's', 'p', 'm', m)
    room = room - 1
    out[#out + 1] = 1
  end
end
return out
