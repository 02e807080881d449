-- A page of one state's entries. ARGV: entry key prefix, state (pending, scheduled,
-- processing, dead, done), order (asc, desc), cursor ('' for the start), limit, scan budget,
-- type ('' for any; the flag in ARGV[9]), id prefix ('' for any; flag in ARGV[10]).
-- Returns the next cursor ('' at the end), then for each entry: id, type, attempts, received
-- ms, next attempt ms or '', finished ms or '', last error or '', state.
--
-- Cursors: `z:<score>:<n>` in a sorted set (past the first n members of that score), `s:<id>`
-- in a stream. Pending entries are two sources, retries whose time came (in `scheduled`, not
-- yet moved into the stream by a take) then the stream, each in time order (reversed for
-- `desc`).
local ep, state, desc = ARGV[1], ARGV[2], ARGV[3] == 'desc'
local limit, budget = tonumber(ARGV[5]), tonumber(ARGV[6])
local want_type = ARGV[9] == '1' and ARGV[7] or nil
local want_prefix = ARGV[10] == '1' and ARGV[8] or nil
local out, found, scanned, more = {''}, 0, 0, false

local function keep(id, f, next_ms, finished)
  -- f: type, received, attempts, error
  if want_type and f[1] ~= want_type then return end
  if want_prefix and string.sub(id, 1, #want_prefix) ~= want_prefix then return end
  found = found + 1
  for _, v in ipairs({id, f[1], f[3], f[2], next_ms or '', finished or '', f[4] or '', state}) do
    out[#out + 1] = v
  end
end

-- A sorted set between lo and hi (inclusive scores, as numbers), from the cursor (score, n).
-- Calls visit(id, score) for each member until it returns false; returns the cursor after the
-- last member visited, or nil when the set ended.
local function zscan(key, lo, hi, cscore, cskip, visit)
  local start, skip = cscore, cskip
  while true do
    local chunk = budget - scanned
    if not (want_type or want_prefix) then chunk = math.min(chunk, limit - found + 1) end
    chunk = math.max(1, math.min(chunk, 1000))
    local page
    if desc then
      page = redis.call('ZREVRANGEBYSCORE', key, start or hi, lo, 'WITHSCORES', 'LIMIT', skip, chunk)
    else
      page = redis.call('ZRANGEBYSCORE', key, start or lo, hi, 'WITHSCORES', 'LIMIT', skip, chunk)
    end
    if #page == 0 then return nil end
    for i = 1, #page, 2 do
      if found == limit or scanned == budget then
        more = true
        return 'z:' .. (start or '') .. ':' .. skip
      end
      local score = page[i + 1]
      if score == start then skip = skip + 1 else start, skip = score, 1 end
      scanned = scanned + 1
      visit(page[i], score)
    end
  end
end

-- A stream after (or, for desc, before) the message id `from`; like zscan.
local function sscan(key, from, visit)
  local last = from
  while true do
    local chunk = budget - scanned
    if not (want_type or want_prefix) then chunk = math.min(chunk, limit - found + 1) end
    chunk = math.max(1, math.min(chunk, 1000))
    local page
    if desc then
      page = redis.call('XREVRANGE', key, last and ('(' .. last) or '+', '-', 'COUNT', chunk)
    else
      page = redis.call('XRANGE', key, last and ('(' .. last) or '-', '+', 'COUNT', chunk)
    end
    if #page == 0 then return nil end
    for _, msg in ipairs(page) do
      if found == limit or scanned == budget then
        more = true
        return 's:' .. (last or '')
      end
      last = msg[1]
      scanned = scanned + 1
      visit(msg[2][2], msg[1])
    end
  end
end

local function ms_of(message) return string.match(message, '^(%d+)') end

local function from_zset(key, lo, hi, cursor, want_state, finished_field, in_range)
  local cscore, cskip = nil, 0
  if cursor then
    local s, n = string.match(cursor, '^z:([^:]*):(%d+)$')
    if not s then return redis.error_reply('bad cursor') end
    if s ~= '' then cscore, cskip = s, tonumber(n) end
  end
  return zscan(key, lo, hi, cscore, cskip, function(id, score)
    if in_range and not in_range(tonumber(score)) then return end
    local f = redis.call('HMGET', ep .. id, 't', 'r', 'a', 'e', 's', 'z', 'u')
    if f[5] ~= want_state then return end
    if finished_field then
      keep(id, f, nil, f[6])
    elseif want_state == 'q' then
      keep(id, f, f[7], nil)
    else
      keep(id, f, score, nil)
    end
  end)
end

local function from_stream(key, cursor, want_state)
  local from = nil
  if cursor then
    from = string.match(cursor, '^s:(.*)$')
    if not from then return redis.error_reply('bad cursor') end
    if from == '' then from = nil end
  end
  return sscan(key, from, function(id, message)
    local f = redis.call('HMGET', ep .. id, 't', 'r', 'a', 'e', 's', 'z', 'm', 'dm')
    if f[5] ~= want_state then return end
    if want_state == 'x' then
      if f[8] == message then keep(id, f, nil, f[6]) end
    elseif f[7] == message then
      keep(id, f, ms_of(message), nil)
    end
  end)
end

local cursor = ARGV[4] ~= '' and ARGV[4] or nil
local next_cursor
if type(cursor) == 'string' and not string.match(cursor, '^[zs]:') then
  return redis.error_reply('bad cursor')
end
if state == 'scheduled' then
  next_cursor = from_zset(KEYS[2], '(' .. now, '+inf', cursor, 's', false,
    function(score) return score > now end)
elseif state == 'processing' then
  next_cursor = from_zset(KEYS[5], '-inf', '+inf', cursor, 'q')
elseif state == 'done' then
  next_cursor = from_zset(KEYS[4], '-inf', '+inf', cursor, 'd', true)
elseif state == 'dead' then
  next_cursor = from_stream(KEYS[3], cursor, 'x')
else
  -- Pending: overdue retries and the stream, one after the other (in `desc` order reversed).
  local overdue = function(c)
    return from_zset(KEYS[2], '-inf', now, c, 's', false, function(score) return score <= now end)
  end
  local stream = function(c) return from_stream(KEYS[1], c, 'p') end
  local first, second, second_start = overdue, stream, 's:'
  if desc then first, second, second_start = stream, overdue, 'z::0' end
  local phase_second = cursor and string.sub(cursor, 1, 1) == string.sub(second_start, 1, 1)
  if not phase_second then
    next_cursor = first(cursor)
    if type(next_cursor) == 'table' then return next_cursor end
    if not next_cursor and not more then next_cursor = second(second_start) end
  else
    next_cursor = second(cursor)
  end
end
if type(next_cursor) == 'table' then return next_cursor end
out[1] = next_cursor or ''
return out
