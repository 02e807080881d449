-- The earliest scheduled retry or lease expiry (ms), or -1; and the server's time.
local due = -1
for _, key in ipairs({KEYS[2], KEYS[5]}) do
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if first[2] then
    local at = tonumber(first[2])
    if due < 0 or at < due then due = at end
  end
end
return {due, now}
