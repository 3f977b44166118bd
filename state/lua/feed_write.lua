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
local n_counters, n_errors = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 4
for k = 5, #KEYS do
  local key = KEYS[k]
  local top = redis.call('ZREVRANGE', key, 0, 0, 'WITHSCORES')
  local top_score = top[2] and tonumber(top[2]) or nil
  local rewrite = false
  for member in string.gmatch(ARGV[i + 3], '%[[^%[%]]*%]') do
    local score = string.match(member, '^%[(%-?%d+),')
    if top_score ~= nil and tonumber(score) < top_score then rewrite = true end
    redis.call('ZREMRANGEBYSCORE', key, score, score)
    redis.call('ZADD', key, score, member)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  local mark = redis.call('HGET', KEYS[4], ARGV[i + 1])
  local born, rev, rw
  if mark then born, rev, rw = string.match(mark, '^(%d+):(%d+):(%d+)$') end
  if born == nil then
    local t = redis.call('TIME')
    born, rev, rw = t[1] .. string.format('%06d', tonumber(t[2])), 0, 0
  end
  rev = tonumber(rev) + 1
  if rewrite then rw = rev end
  redis.call('HSET', KEYS[4], ARGV[i + 1], born .. ':' .. rev .. ':' .. rw)
  i = i + 4
end
for _ = 1, n_counters do
  redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, n_errors do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
    'source', ARGV[i], 'error', ARGV[i + 1], 'sample', ARGV[i + 2], 'at_ms', ARGV[i + 3])
  i = i + 4
end
return #KEYS - 4
