-- Hand the lease to a named successor at a tick boundary (planned handover).
-- KEYS[1] lease hash, KEYS[2] epoch counter
-- ARGV[1] holder id, ARGV[2] epoch, ARGV[3] new holder id, ARGV[4] new color,
-- ARGV[5] new release, ARGV[6] now_ms, ARGV[7] ttl_ms
-- Returns the successor's epoch (old + at least 1), or 0 when the caller does not hold it.
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[3], 'color', ARGV[4], 'release', ARGV[5],
           'epoch', epoch, 'expires_ms', tonumber(ARGV[6]) + tonumber(ARGV[7]),
           'acquired_ms', ARGV[6])
return epoch
