-- Release the deploy lock, only if it is still ours (compare-and-delete): a deploy that
-- outlived its lock's TTL must not delete the lock of the deploy that took it since.
-- KEYS[1] deploy lock
-- ARGV[1] the token this deploy set it to
-- Returns 1 when the lock was ours and is deleted, else 0.
local bad = check_types({KEYS[1], 'string'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
