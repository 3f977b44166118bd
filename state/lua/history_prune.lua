-- Prune history past its retention (BATON_HISTORY_DAYS): settled and closed positions and final
-- intents of windows that ended before the cutoff, their at-most-once refs (an entry's
-- 'buy:<id>', an exit leg's 'sell:<id>', a position's 'settle:<id>'), and the ledger stream's
-- entries before the cutoff. The running sums (ledger totals, daily PnL) are not touched:
-- cash + open cost = initial + realised PnL holds as before.
-- Fenced like every write of the lease holder. A record is removed only if it still holds
-- the very JSON the caller judged (a record changed since is left for the next pass) and is
-- in no open set: an open position or an open intent is never pruned, whatever its age, nor
-- the intent of a position still open, nor a position whose intent is open again.
-- KEYS[1] epoch counter, KEYS[2] positions hash, KEYS[3] open positions hash,
-- KEYS[4] intents hash, KEYS[5] open intents hash, KEYS[6] ledger refs, KEYS[7] ledger stream,
-- KEYS[8] counts hash (_counts.lua: what is pruned leaves the counts)
-- ARGV[1] caller epoch, ARGV[2] retention ms (ledger entries whose id, Redis's own clock at
-- the XADD, is older than Redis's clock now minus it go: no caller's clock is trusted for it),
-- ARGV[3] number of positions n, then n triples (position id, its JSON as read, the id of its
-- intent), then triples (intent id, its JSON as read, the id of its slot-window's position)
-- Returns {positions pruned, intents pruned, ledger entries pruned}, or 'STALE_EPOCH'; a
-- BADVALUE error, having written nothing, when the counts hash is garbage.
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'hash',
  KEYS[5], 'hash', KEYS[6], 'set', KEYS[7], 'stream'}) or check_int_args({'retention_ms', 2, 'positions', 3})
if bad then return redis.error_reply(bad) end
if (#ARGV - 3) % 3 ~= 0 or 3 * tonumber(ARGV[3]) > #ARGV - 3 then
  return redis.error_reply('BADARG ARGV: not triples, or fewer than the positions counted')
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
bad = count_check(KEYS[8])
if bad then return redis.error_reply(bad) end
-- The triples from ARGV[first] to ARGV[last] for one hash: a record goes, with its ref
-- (prefix .. id), when it still holds the JSON judged and neither it (in its own open hash)
-- nor its counterpart (in the other's) is open.
local delta = {}
local function prune(first, last, hash, open, other_open, prefix, count_fields, prefix2)
  local pruned = 0
  for a = first, last, 3 do
    local id, json, other = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    if redis.call('HGET', hash, id) == json and redis.call('HEXISTS', open, id) == 0
        and redis.call('HEXISTS', other_open, other) == 0 then
      redis.call('HDEL', hash, id)
      redis.call('SREM', KEYS[6], prefix .. id)
      if prefix2 then redis.call('SREM', KEYS[6], prefix2 .. id) end
      count_add(delta, count_fields(json), -1)
      pruned = pruned + 1
    end
  end
  return pruned
end
local split = 4 + 3 * tonumber(ARGV[3])
local pruned_pos = prune(4, split - 1, KEYS[2], KEYS[3], KEYS[5], 'settle:', position_count_fields)
local pruned_int = prune(split, #ARGV, KEYS[4], KEYS[5], KEYS[3], 'buy:',
                         function(json) return {intent_count_field(json)} end, 'sell:')
count_apply(KEYS[8], delta)
-- At most TRIM_MAX ledger entries per call: the first pass over a long-kept ledger must not
-- hold Redis for seconds (exact XTRIM has no LIMIT; the cut is moved to the TRIM_MAX-th entry).
local TRIM_MAX = 1000
local t = redis.call('TIME')
local min_id = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
local trimmed = 0
if min_id > 0 then
  local cut = string.format('%.0f', min_id)
  local old = redis.call('XRANGE', KEYS[7], '-', '(' .. cut, 'COUNT', TRIM_MAX + 1)
  if #old > TRIM_MAX then cut = old[TRIM_MAX + 1][1] end
  if #old > 0 then trimmed = redis.call('XTRIM', KEYS[7], 'MINID', cut) end
end
return {pruned_pos, pruned_int, trimmed}
