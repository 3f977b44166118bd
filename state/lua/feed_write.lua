-- The feed's write of one batch (feed/store.py), atomic: a reader never sees a candle removed
-- but not yet re-added. One command, whatever the batch size.
-- KEYS[1] feed status hash, KEYS[2] feed stats hash, KEYS[3] error journal stream,
-- KEYS[4] candle marks hash, KEYS[5..] the candle windows (zsets scored by open time) of the
-- batch's assets
-- ARGV[1] counters, ARGV[2] errors, ARGV[3] journal MAXLEN (approximate), then
--   per window: trim cutoff (members scored below it are removed), status field, status value,
--     the candles: a JSON array of candles, each a flat array [open_ms, ...] that becomes a
--     member scored by its open time, replacing any member of that open time
--   per counter: name, increment
--   per error: source, error, sample, at_ms
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
  or check_int_args({'counters', 1, 'errors', 2, 'maxlen', 3})
if bad then return redis.error_reply(bad) end
local n_counters, n_errors = tonumber(ARGV[1]), tonumber(ARGV[2])
local n_win = #KEYS - 4
if #ARGV ~= 3 + 4 * n_win + 2 * n_counters + 4 * n_errors then
  return redis.error_reply('BADARG ARGV: not 4 values per window, 2 per counter, 4 per error')
end
local skipped = {} -- window -> why it is left alone; journaled below with the garbage counters
local problems = {}
for w = 1, n_win do
  local a = 4 + (w - 1) * 4
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
local first_counter = 4 + 4 * n_win
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
for w = 1, n_win do fields[w] = ARGV[4 + (w - 1) * 4 + 1] end
local marks = {}
for j = 1, n_win, STEP do
  local got = redis.call('HMGET', KEYS[4], unpack(fields, j, math.min(j + STEP - 1, n_win)))
  for k = 1, #got do marks[j + k - 1] = got[k] end
end
local statuses, new_marks = {}, {}
local now = nil
local i = 4
local written = 0
for w = 1, n_win do
  local key = KEYS[4 + w]
  if not skipped[w] then
    written = written + 1
    local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
    local top_score = top[2] and tonumber(top[2]) or nil
    local highest = top_score -- the highest score in the window as the batch goes in
    local rewrite = false
    for member in string.gmatch(ARGV[i + 3], '%[[^%[%]]*%]') do
      local score = string.match(member, '^%[(%-?%d+),')
      local s = tonumber(score)
      if top_score ~= nil and s < top_score then rewrite = true end
      -- A candle past the highest score replaces nothing (the common case: one command).
      if highest ~= nil and s <= highest then redis.call('ZREMRANGEBYSCORE', key, score, score) end
      redis.call('ZADD', key, score, member)
      if highest == nil or s > highest then highest = s end
    end
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[i])
    statuses[#statuses + 1] = ARGV[i + 1]
    statuses[#statuses + 1] = ARGV[i + 2]
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
  i = i + 4
end
each_slice('HSET', KEYS[1], statuses)
each_slice('HSET', KEYS[4], new_marks)
for j = 1, n_counters do
  if not garbage_counter[j] then redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1]) end
  i = i + 2
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
