-- One step of a pause. ARGV: entry key prefix, the pause's key (`*` or `type:` and the type),
-- the type ('' for every type: flag in ARGV[4]), `1` for every type, the phase and its cursor
-- (`z:` and a ZSCAN cursor in the scheduled set, `s:` and the stream message to go on after),
-- the budget (members or messages read), `1` on the first step (it records the pause).
-- Returns the next phase and cursor ('' when done) and how many entries this step held.
-- Stops when the pause was resumed meanwhile.
local ep, key, t, all = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local budget = tonumber(ARGV[7])
if ARGV[8] == '1' then
  redis.call('HSETNX', KEYS[7], key, now)
elseif redis.call('HEXISTS', KEYS[7], key) == 0 then
  return {'', 0}
end
local moved = 0
local function mine(ty) return all or ty == t end
if ARGV[5] == 'z' then
  -- The scheduled retries, kept by their due time.
  local r = redis.call('ZSCAN', KEYS[2], ARGV[6], 'COUNT', budget)
  local members = r[2]
  for i = 1, #members, 2 do
    local id, score = members[i], members[i + 1]
    local e = ep .. id
    local f = redis.call('HMGET', e, 's', 't')
    if f[1] == 's' and mine(f[2]) then
      redis.call('ZREM', KEYS[2], id)
      hold(id, e, tonumber(score))
      moved = moved + 1
    end
  end
  if r[1] ~= '0' then return {'z:' .. r[1], moved} end
  return {'s:', moved}
end
-- The stream's messages no worker has read yet (a pending entry's), kept by their time.
local from = ARGV[6]
if from == '' then from = last_delivered() or '0-0' end
local page = redis.call('XRANGE', KEYS[1], '(' .. from, '+', 'COUNT', budget)
for _, msg in ipairs(page) do
  local m, id = msg[1], msg[2][2]
  local e = ep .. id
  local f = redis.call('HMGET', e, 's', 'm', 't')
  if f[1] == 'p' and f[2] == m and mine(f[3]) then
    redis.pcall('XACK', KEYS[1], 'workers', m)
    redis.call('XDEL', KEYS[1], m)
    hold(id, e, tonumber(string.match(m, '^(%d+)')))
    moved = moved + 1
  end
end
if #page < budget then return {'', moved} end
return {'s:' .. page[#page][1], moved}
