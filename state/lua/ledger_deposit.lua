-- Book a deposit once (the paper account's starting cash); fenced.
-- KEYS[1] epoch counter, KEYS[2] ledger stream, KEYS[3] ledger totals, KEYS[4] ledger refs,
-- KEYS[5] ledger day hash
-- ARGV[1] caller epoch, ARGV[2] ref, ARGV[3] amount micros, ARGV[4] at_ms
-- Returns 'OK', 'STALE_EPOCH' or 'ALREADY'; a BADVALUE error, having written nothing, when a
-- ledger key or running sum cannot be added to (_check.lua).
local bad = check_types({KEYS[1], 'string', KEYS[4], 'set'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
-- Booked before (every activation after the first): nothing to write, whatever the sums hold.
if redis.call('SISMEMBER', KEYS[4], ARGV[2]) == 1 then return 'ALREADY' end
bad = ledger_check(KEYS[2], KEYS[3], KEYS[4], KEYS[5], 'deposit', 3, 3, 4)
if bad then return redis.error_reply(bad) end
if ledger_append(KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[2], 'deposit', ARGV[3], 0,
                 ARGV[4], ARGV[1]) == 0 then
  return 'ALREADY'
end
return 'OK'
