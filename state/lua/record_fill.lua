-- A fill: the intent becomes final, a position opens and its cost is booked, atomically.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash,
-- KEYS[4] positions hash, KEYS[5] open positions hash, KEYS[6] ledger stream,
-- KEYS[7] ledger totals, KEYS[8] ledger refs, KEYS[9] ledger day hash
-- ARGV[1] caller epoch, ARGV[2] intent id, ARGV[3] intent JSON, ARGV[4] position id,
-- ARGV[5] position JSON, ARGV[6] cost in micros (positive), ARGV[7] at_ms
-- Returns 'OK', 'STALE_EPOCH', or 'ALREADY' (this fill was booked before: nothing changes).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
if redis.call('HEXISTS', KEYS[4], ARGV[4]) == 1 then return 'ALREADY' end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[5], ARGV[4], ARGV[5])
ledger_append(KEYS[6], KEYS[7], KEYS[8], KEYS[9], 'buy:' .. ARGV[2], 'buy',
              -tonumber(ARGV[6]), 0, ARGV[7], ARGV[1])
return 'OK'
