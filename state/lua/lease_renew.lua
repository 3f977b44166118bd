-- Extend our lease; refused when another holder or a newer epoch exists.
-- KEYS[1] lease hash, KEYS[2] epoch counter
-- ARGV[1] holder id, ARGV[2] epoch, ARGV[3] now_ms, ARGV[4] ttl_ms
-- Returns 1 when renewed, 0 when the lease is no longer ours.
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'string'}) or check_int_args({'now_ms', 3, 'ttl_ms', 4})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'expires_ms', tonumber(ARGV[3]) + tonumber(ARGV[4]))
return 1
