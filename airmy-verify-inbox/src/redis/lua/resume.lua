-- One step of a resume. ARGV: entry key prefix, the pause's key, the rank in the paused set to
-- go on from, the budget (members read), `1` on the first step (it removes the pause; nothing
-- else when it was not paused). The paused entries no pause holds any more are due again at
-- their time: into the stream when it has come, into the scheduled set when it is later.
-- Returns the rank to go on from (-1 when done) and how many entries this step released.
local ep = ARGV[1]
if ARGV[5] == '1' and redis.call('HDEL', KEYS[7], ARGV[2]) == 0 then return {-1, 0} end
local offset, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local page = redis.call('ZRANGE', KEYS[6], offset, offset + budget - 1, 'WITHSCORES')
local released = 0
for i = 1, #page, 2 do
  local id, due = page[i], tonumber(page[i + 1])
  local e = ep .. id
  local f = redis.call('HMGET', e, 's', 't')
  if f[1] ~= 'h' then
    redis.call('ZREM', KEYS[6], id)
  elseif held(f[2]) then
    offset = offset + 1
  else
    redis.call('ZREM', KEYS[6], id)
    if due > now then
      redis.call('HSET', e, 's', 's')
      redis.call('ZADD', KEYS[2], due, id)
    else
      redis.call('HSET', e, 's', 'p', 'm', redis.call('XADD', KEYS[1], '*', 'i', id))
    end
    released = released + 1
  end
end
if #page < 2 * budget then return {-1, released} end
return {offset, released}
