-- A page of one state's entries. ARGV: entry key prefix, state (pending, scheduled, paused,
-- processing, dead, done), order (asc, desc), cursor ('' for the start), limit, scan budget,
-- type ('' for any; the flag in ARGV[9]), id prefix ('' for any; flag in ARGV[10]).
-- Returns the next cursor ('' at the end), then for each entry: id, type, attempts, received
-- ms, next attempt ms or '', finished ms or '', last error or '', state.
--
-- Cursors: `z:<score>:<member>` in a sorted set (past that member: members of one score are in
-- lexical order, so the cursor holds whatever leaves or joins the set meanwhile), `s:<id>` in a
-- stream. A cursor of another kind than the state's answers {'!bad'}. Pending entries are two sources, retries whose time came (in `scheduled`, not
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

-- How many members or messages to read next: what the budget leaves, and (unfiltered) no
-- more than the page still needs plus one; at most 1,000 a read.
local function chunk_size()
  local chunk = budget - scanned
  if not (want_type or want_prefix) then chunk = math.min(chunk, limit - found + 1) end
  return math.max(1, math.min(chunk, 1000))
end

-- A sorted set between lo and hi (score bounds as Redis takes them), after the cursor
-- (score, member), or from the start when cscore is nil. Calls visit(id, score) for each member
-- until the page is full or the budget spent; returns the cursor after the last member
-- visited, or nil when the set ended. Members of the cursor's score up to the cursor's member
-- are passed over without counting against the budget (the cursor always moves on).
local function zscan(key, lo, hi, cscore, cmember, visit)
  local offset, last_score, last_member = 0, cscore, cmember
  while true do
    local chunk = chunk_size()
    local page
    if desc then
      page = redis.call('ZREVRANGEBYSCORE', key, cscore or hi, lo, 'WITHSCORES', 'LIMIT', offset, chunk)
    else
      page = redis.call('ZRANGEBYSCORE', key, cscore or lo, hi, 'WITHSCORES', 'LIMIT', offset, chunk)
    end
    if #page == 0 then return nil end
    for i = 1, #page, 2 do
      local member, score = page[i], page[i + 1]
      offset = offset + 1
      local passed = cscore and score == cscore and
        ((not desc and member <= cmember) or (desc and member >= cmember))
      if not passed then
        if found == limit or scanned == budget then
          more = true
          return 'z:' .. (last_score or '') .. ':' .. (last_member or '')
        end
        last_score, last_member = score, member
        scanned = scanned + 1
        visit(member, score)
      end
    end
  end
end

-- A stream after (or, for desc, before) the message id `from`; like zscan.
local function sscan(key, from, visit)
  local last = from
  while true do
    local chunk = chunk_size()
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
  local cscore, cmember = nil, nil
  if cursor then
    local s, m = string.match(cursor, '^z:([^:]*):(.*)$')
    if not s then return {'!bad'} end
    if s ~= '' then cscore, cmember = s, m end
  end
  return zscan(key, lo, hi, cscore, cmember, function(id, score)
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
    if not from then return {'!bad'} end
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
  return {'!bad'}
end
if state == 'scheduled' then
  next_cursor = from_zset(KEYS[2], '(' .. now, '+inf', cursor, 's', false,
    function(score) return score > now end)
elseif state == 'paused' then
  next_cursor = from_zset(KEYS[6], '-inf', '+inf', cursor, 'h')
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
  if desc then first, second, second_start = stream, overdue, 'z::' end
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
