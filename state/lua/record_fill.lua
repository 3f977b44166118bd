-- Fills: each intent becomes final, its position opens and its cost is booked, atomically.
-- One call for every fill of a tick booked on the same day.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash,
-- KEYS[4] positions hash, KEYS[5] open positions hash, KEYS[6] ledger stream,
-- KEYS[7] ledger totals, KEYS[8] ledger refs, KEYS[9] ledger day hash
-- ARGV[1] caller epoch, then per fill 6 values: intent id, intent JSON, position id,
-- position JSON, cost in micros (positive), at_ms
-- Returns one verdict per fill, in order: 'OK', 'STALE_EPOCH', or 'ALREADY' (this fill was
-- booked before: nothing changes).
local n = (#ARGV - 1) / 6
local out = {}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  for j = 1, n do out[j] = 'STALE_EPOCH' end
  return out
end
for j = 1, n do
  local a = 1 + (j - 1) * 6
  local intent_id, intent, pos_id, pos = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if redis.call('HEXISTS', KEYS[4], pos_id) == 1 then
    out[j] = 'ALREADY'
  else
    redis.call('HSET', KEYS[2], intent_id, intent)
    redis.call('HDEL', KEYS[3], intent_id)
    redis.call('HSET', KEYS[4], pos_id, pos)
    redis.call('HSET', KEYS[5], pos_id, pos)
    ledger_append(KEYS[6], KEYS[7], KEYS[8], KEYS[9], 'buy:' .. intent_id, 'buy',
                  -tonumber(ARGV[a + 5]), 0, ARGV[a + 6], ARGV[1])
    out[j] = 'OK'
  end
end
return out
