-- Counts: stream length, leased, scheduled (overdue ones apart: due, not moved into the
-- stream yet because no worker took since), dead, done, the oldest due entry's time (ms, or
-- -1), the server's time, and paused.
local len = redis.call('XLEN', KEYS[1])
local leased, oldest = 0, -1
local summary = redis.pcall('XPENDING', KEYS[1], 'workers')
if type(summary) == 'table' and not summary.err then leased = summary[1] end
local next = redis.call('XRANGE', KEYS[1], '(' .. (last_delivered() or '0-0'), '+', 'COUNT', 1)
if next[1] then oldest = tonumber(string.match(next[1][1], '^(%d+)')) end
local overdue = redis.call('ZCOUNT', KEYS[2], '-inf', now)
if overdue > 0 then
  local first = tonumber(redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2])
  if oldest < 0 or first < oldest then oldest = first end
end
return {len, leased, redis.call('ZCARD', KEYS[2]), overdue, redis.call('XLEN', KEYS[3]),
  redis.call('ZCARD', KEYS[4]), oldest, now, redis.call('ZCARD', KEYS[6])}
