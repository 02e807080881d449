-- ARGV: entry key prefix, consumer, max, lease ms, token seed, `1` when recovering the
-- entries of a take with that seed whose reply was lost. Returns id, type, body, received ms,
-- attempt, token for each entry. Paused entries are in neither the stream nor the scheduled
-- set: the take never reads them. An entry it meets that a pause holds (a retry of a paused
-- type whose time came, a lease run out on one, a message added by an older replica or while
-- the pause was being made) is held (prelude_paused.lua), not taken: no attempt counted, and
-- at most 1,000 such in one take.
local ep, consumer = ARGV[1], ARGV[2]
local max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local out, n, bytes = {}, 0, 0
if last_delivered() == nil then
  -- No group (a Redis restarted empty, or the stream deleted): start it again, so that what
  -- is accepted from now on is handled.
  redis.call('XGROUP', 'CREATE', KEYS[1], 'workers', '0', 'MKSTREAM')
end
if ARGV[6] == '1' then
  -- The reply to the take with this seed was lost: hand back what it leased, if it ran.
  local mine = ARGV[5] .. ':'
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], 'workers', '-', '+', 1000, consumer)) do
    local msg = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
    if msg then
      local id = msg[2][2]
      local f = redis.call('HMGET', ep .. id, 's', 'k', 't', 'b', 'r', 'a')
      if f[1] == 'q' and f[2] and string.sub(f[2], 1, #mine) == mine then
        for _, v in ipairs({id, f[3], f[4], f[5], f[6], f[2]}) do out[#out + 1] = v end
      end
    end
  end
  if #out > 0 then return out end
end
local holds = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', KEYS[2], id)
  local e = ep .. id
  local f = redis.call('HMGET', e, 's', 't')
  if f[1] == 's' then
    if held(f[2]) then
      hold(id, e, now)
      holds = holds + 1
    else
      redis.call('HSET', e, 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    end
  end
end
local function drop(m)
  redis.pcall('XACK', KEYS[1], 'workers', m)
  redis.call('XDEL', KEYS[1], m)
end
local function stamp(id, m)
  local e = ep .. id
  n = n + 1
  local token = ARGV[5] .. ':' .. n
  local attempt = redis.call('HINCRBY', e, 'a', 1)
  local u = now + lease
  redis.call('HSET', e, 's', 'q', 'k', token, 'u', u, 'm', m)
  redis.call('ZADD', KEYS[5], u, id)
  local f = redis.call('HMGET', e, 't', 'b', 'r')
  bytes = bytes + #f[2]
  for _, v in ipairs({id, f[1], f[2], f[3], tostring(attempt), token}) do
    out[#out + 1] = v
  end
end
-- At most `max` entries, and no more once 8 MiB of bodies are taken (2 MiB bodies).
local function room() return n < max and bytes < 8388608 end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', now, 'LIMIT', 0, max)) do
  if not room() then break end
  local f = redis.call('HMGET', ep .. id, 's', 'm', 't')
  if f[1] == 'q' and f[2] and held(f[3]) then
    -- Its worker died while a pause holds its type: held, not taken over.
    drop(f[2])
    redis.call('ZREM', KEYS[5], id)
    hold(id, ep .. id, now)
    holds = holds + 1
  elseif f[1] == 'q' and f[2] then
    -- Its worker died or stalled: move the message to this consumer's pending list (gone
    -- with a lost stream: the lease in the entry is what counts).
    redis.pcall('XCLAIM', KEYS[1], 'workers', consumer, 0, f[2], 'JUSTID')
    stamp(id, f[2])
  else
    redis.call('ZREM', KEYS[5], id)
  end
end
while room() and holds < 1000 do
  local read = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1,
    'STREAMS', KEYS[1], '>')
  if not read then break end
  for _, msg in ipairs(read[1][2]) do
    local m, id = msg[1], msg[2][2]
    local f = redis.call('HMGET', ep .. id, 's', 'm', 't')
    if f[1] == 'p' and f[2] == m and held(f[3]) then
      drop(m)
      hold(id, ep .. id, tonumber(string.match(m, '^(%d+)')))
      holds = holds + 1
    elseif f[1] == 'p' and f[2] == m then
      stamp(id, m)
    else
      drop(m)
    end
  end
end
return out
