-- Shared by the scripts that need it: the group's last delivered message id (`0-0` before
-- any), `nil` when there is no group.
local function last_delivered()
  local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local fields = {}
      for i = 1, #g, 2 do fields[g[i]] = g[i + 1] end
      if fields['name'] == 'workers' then return fields['last-delivered-id'] end
    end
  end
  return nil
end
