-- Withdraw a handover request that was not carried out in time (compare-and-set, so a
-- request the active worker has just carried out is never reported as cancelled).
-- KEYS[1] handover hash
-- ARGV[1] request id, ARGV[2] reason, ARGV[3] now_ms
-- Returns the request's state afterwards: 'cancelled', or 'done'/'refused'/'' as it was.
local bad = check_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return '' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'requested' then return state end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', ARGV[2], 'done_ms', ARGV[3])
return 'cancelled'
