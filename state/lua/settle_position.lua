-- Settle a position of a closed window: it leaves the open set, the payout is booked and
-- realised PnL moves, atomically and at most once.
-- The writer is the settle program (an rq job), which holds no lease: its fence is the
-- position record itself. The job computed the settlement from the JSON it read (ARGV[1]);
-- if the record changed since (a late fill reconciled into it), the write is refused and
-- the job reads again. The ledger ref makes a second run of the same job a no-op.
-- KEYS[1] epoch counter (recorded with the ledger entry), KEYS[2] positions hash,
-- KEYS[3] open positions hash (id -> the position JSON), KEYS[4] ledger stream, KEYS[5] ledger totals,
-- KEYS[6] ledger refs, KEYS[7] ledger day hash, KEYS[8] counts hash (_counts.lua),
-- KEYS[9] open intents hash
-- ARGV[1] position JSON the settlement was computed from, ARGV[2] position id,
-- ARGV[3] settled position JSON, ARGV[4] payout micros, ARGV[5] pnl micros, ARGV[6] at_ms,
-- ARGV[7..] the ids of the position's exit intents that may exist (<id>:exit-1 .. exit-N)
-- A position partly sold by exits is settled on the shares it still holds (the caller's
-- payout and pnl say so); a closed one (all sold) is not in the open set and never settles.
-- While an exit of the position is still open (its fill not booked yet) the settlement
-- waits ('PENDING'): paid first, it would pay on shares already sold.
-- Returns 'OK', 'ALREADY' (settled before), 'UNKNOWN' (no open position), 'CHANGED' or
-- 'PENDING'; a
-- BADVALUE error, having written nothing, when a key or running sum it would write cannot be
-- used (_check.lua, and the counts: _counts.lua): the position stays open and the job is
-- retried until it is repaired; BADARG when the settled JSON is not a settled position.
local bad = check_types({KEYS[2], 'hash', KEYS[3], 'hash', KEYS[6], 'set', KEYS[9], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('SISMEMBER', KEYS[6], 'settle:' .. ARGV[2]) == 1 then return 'ALREADY' end
local current = redis.call('HGET', KEYS[3], ARGV[2])
if not current then return 'UNKNOWN' end
if current ~= ARGV[1] then return 'CHANGED' end
if position_count_fields(current)[1] ~= 'positions:open' then return 'UNKNOWN' end
for i = 7, #ARGV do
  if redis.call('HEXISTS', KEYS[9], ARGV[i]) == 1 then return 'PENDING' end
end
bad = check_int_key(KEYS[1])
  or ledger_check(KEYS[4], KEYS[5], KEYS[6], KEYS[7], 'payout', 4, 5, 6)
  or count_check(KEYS[8])
if bad then return redis.error_reply(bad) end
local now_counted = position_count_fields(ARGV[3])
if now_counted[1] ~= 'positions:settled' then
  return redis.error_reply('BADARG position ' .. ARGV[2] .. ': the settled JSON is not a settled position')
end
local delta = {}
count_add(delta, position_count_fields(redis.call('HGET', KEYS[2], ARGV[2])), -1)
count_add(delta, now_counted, 1)
local epoch = redis.call('GET', KEYS[1]) or '0'
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
count_apply(KEYS[8], delta)
-- A count in progress (counts_recount.lua) counts this position as it is when it finishes.
if redis.call('HEXISTS', KEYS[8], 'recounting') == 1 then
  redis.call('HSET', KEYS[8], 'settled:' .. ARGV[2], 1)
end
redis.call('HDEL', KEYS[3], ARGV[2])
ledger_append(KEYS[4], KEYS[5], KEYS[6], KEYS[7], 'settle:' .. ARGV[2], 'payout',
              ARGV[4], ARGV[5], ARGV[6], epoch)
return 'OK'
