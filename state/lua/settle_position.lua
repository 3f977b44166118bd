-- Settle a position of a closed window: it leaves the open set, the payout is booked and
-- realised PnL moves, atomically and at most once.
-- KEYS[1] epoch counter, KEYS[2] positions hash, KEYS[3] open positions hash,
-- KEYS[4] ledger stream, KEYS[5] ledger totals, KEYS[6] ledger refs, KEYS[7] ledger day hash
-- ARGV[1] caller epoch, ARGV[2] position id, ARGV[3] settled position JSON,
-- ARGV[4] payout micros, ARGV[5] pnl micros, ARGV[6] at_ms
-- Returns 'OK', 'STALE_EPOCH', 'ALREADY' (settled before) or 'UNKNOWN' (no open position).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
if redis.call('SISMEMBER', KEYS[6], 'settle:' .. ARGV[2]) == 1 then return 'ALREADY' end
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 0 then return 'UNKNOWN' end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[3], ARGV[2])
ledger_append(KEYS[4], KEYS[5], KEYS[6], KEYS[7], 'settle:' .. ARGV[2], 'payout',
              ARGV[4], ARGV[5], ARGV[6], ARGV[1])
return 'OK'
