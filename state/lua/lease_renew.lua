-- Extend our lease; refused when another holder or a newer epoch exists.
-- KEYS[1] lease hash, KEYS[2] epoch counter
-- ARGV[1] holder id, ARGV[2] epoch, ARGV[3] now_ms, ARGV[4] ttl_ms
-- Returns 1 when renewed (the lease is ours), 0 when it is no longer ours.
-- The expiry only moves forward: the heartbeat's renewal and the tick's travel on different
-- connections, and the older of the two arriving last must not shorten the lease below what
-- the holder's deadline (kernel/lease.py) already counts on.
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'string'}) or check_int_args({'now_ms', 3, 'ttl_ms', 4})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
local expires_ms = tonumber(ARGV[3]) + tonumber(ARGV[4])
if expires_ms > (tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '0') or 0) then
  redis.call('HSET', KEYS[1], 'expires_ms', expires_ms)
end
return 1
