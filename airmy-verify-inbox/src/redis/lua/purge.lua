-- ARGV: entry key prefix, before ms, batch. Deletes up to a batch of processed entries, and
-- the group's consumers idle for an hour with nothing pending; how many entries.
local ids = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[2]), 'LIMIT', 0,
  tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[4], id)
end
local consumers = redis.pcall('XINFO', 'CONSUMERS', KEYS[1], 'workers')
if type(consumers) == 'table' and not consumers.err then
  for _, c in ipairs(consumers) do
    local fields = {}
    for i = 1, #c, 2 do fields[c[i]] = c[i + 1] end
    if fields['pending'] == 0 and fields['idle'] > 3600000 then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'workers', fields['name'])
    end
  end
end
return #ids
