-- Planned handover, run by the active worker right after it journaled tick ARGV[5]:
-- the lease goes to the successor named in the handover request, with epoch + 1, in one
-- atomic step; the stop mark says the gap after this tick is not a miss; the successor's
-- wake list is pushed so that its standby loop notices at once.
-- KEYS[1] lease hash, KEYS[2] epoch counter, KEYS[3] handover hash, KEYS[4] stats hash,
-- KEYS[5] successor's heartbeat hash, KEYS[6] successor's wake list, KEYS[7] lease log stream
-- ARGV[1] holder id, ARGV[2] epoch, ARGV[3] handover request id, ARGV[4] successor holder id,
-- ARGV[5] last tick run, ARGV[6] now_ms, ARGV[7] ttl_ms, ARGV[8] the log's MAXLEN (~)
-- Returns {1, new epoch}, or {0, reason}: NOT_HOLDER, NO_REQUEST, BAD_REQUEST, NOT_READY.
-- The new epoch is logged as lease_acquire.lua logs one (how: transferred).
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'string', KEYS[3], 'hash', KEYS[4], 'hash',
  KEYS[5], 'hash', KEYS[6], 'list', KEYS[7], 'stream'})
  or check_int_args({'last_tick', 5, 'now_ms', 6, 'ttl_ms', 7, 'maxlen', 8})
if bad then return redis.error_reply(bad) end
if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return {0, 'NOT_HOLDER'} end
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[2] then return {0, 'NOT_HOLDER'} end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0, 'NOT_HOLDER'} end
if redis.call('HGET', KEYS[3], 'id') ~= ARGV[3] then return {0, 'NO_REQUEST'} end
if redis.call('HGET', KEYS[3], 'state') ~= 'requested' then return {0, 'NO_REQUEST'} end
if redis.call('HGET', KEYS[3], 'to_holder') ~= ARGV[4] then return {0, 'NO_REQUEST'} end
-- Check everything the new lease is made of before the first write (a script is not rolled back).
bad = check_int_fields(KEYS[4], {'handovers'})
if bad then return redis.error_reply(bad) end
local to_color = redis.call('HGET', KEYS[3], 'to_color')
local to_release = redis.call('HGET', KEYS[3], 'to_release')
if not to_color or not to_release then
  redis.call('HSET', KEYS[3], 'state', 'refused', 'reason', 'request lacks to_color or to_release', 'done_ms', ARGV[6])
  return {0, 'BAD_REQUEST'}
end
-- The successor must still be alive and ready: its heartbeat expires a few ticks after death.
if redis.call('HGET', KEYS[5], 'holder') ~= ARGV[4] or redis.call('HGET', KEYS[5], 'state') ~= 'ready' then
  redis.call('HSET', KEYS[3], 'state', 'refused', 'reason', 'successor not ready', 'done_ms', ARGV[6])
  return {0, 'NOT_READY'}
end
local now = tonumber(ARGV[6])
local prev_expires = redis.call('HGET', KEYS[1], 'expires_ms') or ''
local epoch = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[4], 'color', to_color, 'release', to_release, 'epoch', epoch,
           'expires_ms', now + tonumber(ARGV[7]), 'acquired_ms', now)
redis.call('HSET', KEYS[3], 'state', 'done', 'tick', ARGV[5], 'from_epoch', ARGV[2], 'epoch', epoch,
           'done_ms', now)
redis.call('HSET', KEYS[4], 'clean_stop_tick', ARGV[5])
redis.call('HINCRBY', KEYS[4], 'handovers', 1)
redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[8], '*', 'epoch', epoch, 'holder', ARGV[4],
           'host', string.match(ARGV[4], '^[^:]*:([^:]*):') or '', 'color', to_color,
           'release', to_release, 'at_ms', now, 'how', 'transferred', 'prev_holder', ARGV[1],
           'prev_expires_ms', prev_expires)
redis.call('RPUSH', KEYS[6], epoch)
redis.call('PEXPIRE', KEYS[6], 60000)
return {1, epoch}
