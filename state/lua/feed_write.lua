-- The feed's write of one batch (feed/store.py), atomic: a reader never sees a candle removed
-- but not yet re-added. One command, whatever the batch size.
-- KEYS[1] feed status hash, KEYS[2] feed stats hash, KEYS[3] error journal stream,
-- KEYS[4..] the candle windows (zsets scored by open time) of the batch's assets
-- ARGV[1] counters, ARGV[2] errors, ARGV[3] journal MAXLEN (approximate), then
--   per window: trim cutoff (members scored below it are removed), status field, status value,
--     the candles: a JSON array of candles, each a flat array [open_ms, ...] that becomes a
--     member scored by its open time, replacing any member of that open time
--   per counter: name, increment
--   per error: source, error, sample, at_ms
local n_counters, n_errors = tonumber(ARGV[1]), tonumber(ARGV[2])
local i = 4
for k = 4, #KEYS do
  local key = KEYS[k]
  for member in string.gmatch(ARGV[i + 3], '%[[^%[%]]*%]') do
    local score = string.match(member, '^%[(%-?%d+),')
    redis.call('ZREMRANGEBYSCORE', key, score, score)
    redis.call('ZADD', key, score, member)
  end
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[i])
  redis.call('HSET', KEYS[1], ARGV[i + 1], ARGV[i + 2])
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
return #KEYS - 3
