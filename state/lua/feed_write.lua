-- The feed's write of one batch (feed/store.py), atomic: a reader never sees a candle removed
-- but not yet re-added. One command, whatever the batch size.
-- KEYS[1] feed status hash, KEYS[2] feed stats hash, KEYS[3] error journal stream,
-- KEYS[4] candle marks hash, KEYS[5..] the candle windows (zsets scored by open time) of the
-- batch's assets
-- ARGV[1] counters, ARGV[2] errors, ARGV[3] journal MAXLEN (approximate), ARGV[4] the writing
--   feed's host ('' for none: its own counters are then not labelled), ARGV[5] the horizon
--   (ms: the feed's clock and its tolerance; a stored candle opening later is garbage from
--   the future, which the rules below ignore), then
--   per window: trim cutoff (members scored below it are removed), status field, status value,
--     the candles: a JSON array of candles, each a flat array [open_ms, ...] that becomes a
--     member scored by its open time, replacing any member of that open time
--   per counter: name, increment
--   per error: source, error, sample, at_ms
-- Several feeds (one per host) write the same windows at once, each a little ahead of or
-- behind the others: a candle never regresses. Against the member stored at its open time:
--   the same member: nothing is written (counted `same`);
--   a stored closed candle is final: anything else is refused (`stale`);
--   an unclosed candle replaces an unclosed one only with as much volume or more (volume
--   only grows while a candle is open); an unclosed candle behind the window's newest one
--   is refused (that candle has closed: the closed one comes from the stream or a backfill).
-- A window's status is written only by a batch that reached the window's newest candle
-- (wrote it or found it as it is), so a lagging feed never sets it back.
-- The script's own counters (`same`, `stale`) go to the stats hash, and with '@<host>'
-- after their name too when ARGV[4] is set (the feed labels its other counters itself).
-- Each window's mark (field = its status field) is '<born>:<rev>:<rewrite rev>': rev counts
-- writes; the rewrite rev is the last write that touched a candle older than the newest one
-- (a backfilled hole, a late update). A reader holding the window as of rev R may read only
-- its newest candle and those after it while the rewrite rev is <= R (the newest one itself
-- may still be an unclosed candle the stream updates: kernel/candle_cache.py).
-- born changes when the mark is new, so a reset store never matches an old reader's copy.
-- Returns the number of windows written. Everything is checked before the first write
-- (_check.lua): a feed key of the wrong type or a bad argument is refused (BADVALUE/BADARG,
-- nothing written); a candle window of another type is left alone, and a feed counter that is
-- not an integer is not added to: each is journaled as an error (source `feed_write`) and the
-- rest of the batch is written, so that one garbage key does not stop every asset's candles.
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'stream', KEYS[4], 'hash'})
  or check_int_args({'counters', 1, 'errors', 2, 'maxlen', 3, 'horizon_ms', 5})
if bad then return redis.error_reply(bad) end
local n_counters, n_errors = tonumber(ARGV[1]), tonumber(ARGV[2])
local n_win = #KEYS - 4
local host = ARGV[4]
if #ARGV ~= 5 + 4 * n_win + 2 * n_counters + 4 * n_errors then
  return redis.error_reply('BADARG ARGV: not 4 values per window, 2 per counter, 4 per error')
end
local skipped = {} -- window -> why it is left alone; journaled below with the garbage counters
local problems = {}
for w = 1, n_win do
  local a = 6 + (w - 1) * 4
  bad = check_int_args({'cutoff_ms', a})
  if bad then return redis.error_reply(bad) end
  for member in string.gmatch(ARGV[a + 3], '%[[^%[%]]*%]') do
    if not string.match(member, '^%[%-?%d+,') then
      return redis.error_reply('BADARG candle ' .. shown(member) .. ': no open time first')
    end
  end
  local t = redis.call('TYPE', KEYS[4 + w])['ok']
  if t ~= 'zset' and t ~= 'none' then
    skipped[w] = true
    problems[#problems + 1] = 'BADVALUE ' .. KEYS[4 + w] .. ' (type): holds a ' .. t ..
      ', not a zset: candles not written'
  end
end
local first_counter = 6 + 4 * n_win
local names = {}
for j = 1, n_counters do
  local c = first_counter + (j - 1) * 2
  names[j] = ARGV[c]
  bad = check_int_args({'increment', c + 1})
  if bad then return redis.error_reply(bad) end
end
local garbage_counter = {}
if n_counters > 0 then
  local got = redis.call('HMGET', KEYS[2], unpack(names))
  for j = 1, n_counters do
    if got[j] and int_problem(got[j], 18) then
      garbage_counter[j] = true
      problems[#problems + 1] = 'BADVALUE ' .. KEYS[2] .. ' ' .. names[j] .. ': holds ' ..
        shown(got[j]) .. ', ' .. int_problem(got[j], 18) .. ': not counted'
    end
  end
end
local STEP = 1000 -- Lua's unpack has a stack limit of a few thousand: long lists go in slices
local function each_slice(cmd, key, list)
  for j = 1, #list, STEP do
    redis.call(cmd, key, unpack(list, j, math.min(j + STEP - 1, #list)))
  end
end
-- The marks are read, and the statuses and marks written, with one command each for the
-- whole batch, not one per window: at hundreds of assets per second, the number of commands
-- run was most of the script's time (and Redis's, while the worker's tick waits on it).
local fields = {}
for w = 1, n_win do fields[w] = ARGV[6 + (w - 1) * 4 + 1] end
local marks = {}
for j = 1, n_win, STEP do
  local got = redis.call('HMGET', KEYS[4], unpack(fields, j, math.min(j + STEP - 1, n_win)))
  for k = 1, #got do marks[j + k - 1] = got[k] end
end
-- A stored member: its volume and whether it is closed (nil for one that does not parse,
-- which any candle replaces).
local function parse(member)
  local v, closed = string.match(member, '^%[[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,([^,]*),(%a+)%]$')
  if v == nil or tonumber(v) == nil then return nil, nil end
  return tonumber(v), closed == 'true'
end
local statuses, new_marks = {}, {}
local now = nil
local i = 6
local written = 0
local same, stale = 0, 0
for w = 1, n_win do
  local key = KEYS[4 + w]
  if not skipped[w] then
    written = written + 1
    -- The newest candle that is not garbage from the future (written by hand: never read,
    -- and it must not make every real candle look behind it).
    local top = redis.call('ZREVRANGEBYSCORE', key, ARGV[5], '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    local top_score = top[2] and tonumber(top[2]) or nil
    local highest = top_score -- the highest score in the window as the batch goes in
    -- The member at `highest`, while known: the stream's usual batch updates the newest
    -- candle, which then needs no read of its own.
    local top_member = top[1]
    local rewrite, wrote = false, false
    local front = nil -- the score of the last candle written or found as it is
    for member in string.gmatch(ARGV[i + 3], '%[[^%[%]]*%]') do
      local score = string.match(member, '^%[(%-?%d+),')
      local s = tonumber(score)
      local verdict = 'write'
      if highest ~= nil and s <= highest then
        -- A candle past the highest score replaces nothing (the common case: one command).
        local stored
        if s == highest and top_member then
          stored = {top_member}
        else
          stored = redis.call('ZRANGE', key, score, score, 'BYSCORE')
        end
        local _, closed = parse(member)
        if #stored == 1 and stored[1] == member then
          verdict = 'same'
        elseif #stored == 1 then
          local old_v, old_closed = parse(stored[1])
          local new_v = parse(member)
          if old_v ~= nil and (old_closed or (not closed and new_v < old_v)) then verdict = 'stale' end
        elseif #stored == 0 and not closed and s < highest then
          verdict = 'stale'
        end
        if verdict == 'write' and #stored > 0 then redis.call('ZREMRANGEBYSCORE', key, score, score) end
      end
      if verdict == 'write' then
        redis.call('ZADD', key, score, member)
        wrote = true
        if top_score ~= nil and s < top_score then rewrite = true end
        if highest == nil or s >= highest then highest, top_member = s, member end
      elseif verdict == 'same' then
        same = same + 1
      else
        stale = stale + 1
      end
      if verdict ~= 'stale' and (front == nil or s > front) then front = s end
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[i])
    if front ~= nil and front == highest then
      statuses[#statuses + 1] = ARGV[i + 1]
      statuses[#statuses + 1] = ARGV[i + 2]
    end
    if wrote then
      local mark = marks[w]
      local born, rev, rw
      if mark then born, rev, rw = string.match(mark, '^(%d+):(%d+):(%d+)$') end
      if born == nil then
        if now == nil then now = redis.call('TIME') end
        born, rev, rw = now[1] .. string.format('%06d', tonumber(now[2])), 0, 0
      end
      rev = tonumber(rev) + 1
      if rewrite then rw = rev end
      new_marks[#new_marks + 1] = ARGV[i + 1]
      new_marks[#new_marks + 1] = born .. ':' .. rev .. ':' .. rw
    end
  end
  i = i + 4
end
if #statuses > 0 then each_slice('HSET', KEYS[1], statuses) end
if #new_marks > 0 then each_slice('HSET', KEYS[4], new_marks) end
for j = 1, n_counters do
  if not garbage_counter[j] then redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
  i = i + 2
end
local own = {}
if same > 0 then own[#own + 1] = {'same', same} end
if stale > 0 then own[#own + 1] = {'stale', stale} end
if #own > 0 then
  for _, c in ipairs(own) do
    local names = {c[1]}
    if host ~= '' then names[2] = c[1] .. '@' .. host end
    for _, name in ipairs(names) do
      local v = redis.call('HGET', KEYS[2], name)
      if v == false or not int_problem(v, 18) then redis.call('HINCRBY', KEYS[2], name, c[2]) end
    end
  end
end
for _ = 1, n_errors do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
    'source', ARGV[i], 'error', ARGV[i + 1], 'sample', ARGV[i + 2], 'at_ms', ARGV[i + 3])
  i = i + 4
end
if #problems > 0 then
  local t = redis.call('TIME')
  local at = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  for _, p in ipairs(problems) do
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
      'source', 'feed_write', 'error', p, 'sample', '', 'at_ms', at)
  end
end
return written
