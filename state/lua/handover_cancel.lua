-- Withdraw a handover request that was not carried out in time (compare-and-set, so a
-- request the active worker has just carried out is never reported as cancelled); or, with
-- ARGV[4] 'refused', the active worker's refusal of one it cannot carry out (a value the
-- transfer depends on is unreadable: the deploy reports why at once instead of timing out).
-- KEYS[1] handover hash
-- ARGV[1] request id, ARGV[2] reason, ARGV[3] now_ms, ARGV[4] the state to set ('cancelled'
-- when absent, or 'refused')
-- Returns the request's state afterwards: 'cancelled'/'refused', or 'done'/'refused'/'' as it was.
local to = ARGV[4] or 'cancelled'
if to ~= 'cancelled' and to ~= 'refused' then return redis.error_reply('BADARG state: ' .. shown(to)) end
local bad = check_types({KEYS[1], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return '' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'requested' then return state end
redis.call('HSET', KEYS[1], 'state', to, 'reason', ARGV[2], 'done_ms', ARGV[3])
return to
