-- Give the lease up on a clean stop, so a successor need not wait for it to expire.
-- KEYS[1] lease hash
-- ARGV[1] holder id, ARGV[2] epoch
-- Returns 1 when released, 0 when it was not ours.
local bad = check_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
return 1
