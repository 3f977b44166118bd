-- The set of values that block new entries (kernel/blocking.py), replaced whole, fenced, with
-- one error-journal line per change (a blocker found, a blocker gone): the journal hears of a
-- problem once, not once per tick.
-- KEYS[1] epoch counter, KEYS[2] blocked hash, KEYS[3] error journal stream, KEYS[4] stats hash
-- ARGV[1] caller epoch, ARGV[2] at_ms, ARGV[3] journal MAXLEN (approximate),
--   ARGV[4] n blockers, ARGV[5] n journal lines, then n (id, Blocker JSON) pairs, then the
--   journal lines (each one error text)
-- Returns 'OK' or 'STALE_EPOCH'; an argument that is not a count is refused before any write,
-- and so is a journal or stats key it cannot write (BADVALUE).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
local n, lines = tonumber(ARGV[4]), tonumber(ARGV[5])
if n == nil or lines == nil or n < 0 or lines < 0 or #ARGV ~= 5 + 2 * n + lines then
  return redis.error_reply('blocked_sync: bad argument counts')
end
-- The journal and the counter it adds to are checked before the first write (_check.lua);
-- the blocked hash itself is replaced whole, whatever it held.
local bad = check_types({KEYS[3], 'stream', KEYS[4], 'hash'}) or check_int_fields(KEYS[4], {'errors_blocked'})
if bad then return redis.error_reply(bad) end
redis.call('DEL', KEYS[2])
if n > 0 then
  local pairs_ = {}
  for i = 6, 5 + 2 * n do pairs_[#pairs_ + 1] = ARGV[i] end
  redis.call('HSET', KEYS[2], unpack(pairs_))
end
for i = 6 + 2 * n, #ARGV do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
    'source', 'blocked', 'error', ARGV[i], 'sample', '', 'at_ms', ARGV[2])
end
if lines > 0 then redis.call('HINCRBY', KEYS[4], 'errors_blocked', lines) end
return 'OK'
