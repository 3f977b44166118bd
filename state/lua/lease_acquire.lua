-- Take the lease when it is free, expired, already ours, or held by a holder the caller
-- has found dead (same host, process gone: no need to wait for the expiry).
-- KEYS[1] lease hash, KEYS[2] epoch counter, KEYS[3] lease log stream
-- ARGV[1] holder id, ARGV[2] color, ARGV[3] release, ARGV[4] now_ms, ARGV[5] ttl_ms,
-- ARGV[6] dead holder id to take over from ('' for none), ARGV[7] the log's MAXLEN (~)
-- Returns {1, epoch} when held (a new holder gets epoch = INCR), {0, epoch, holder} when not.
-- Every new epoch is logged (epoch, holder, host, color, release, at_ms, how: acquired or
-- took-over-dead, prev_holder, prev_expires_ms), so that a checker can tell for any order
-- whether its poster's epoch had been superseded when the venue received it.
-- An epoch counter that is not an integer cannot be made larger than every epoch before:
-- refused (BADVALUE, nothing written), and no one holds the lease until it is repaired.
-- A garbage expires_ms reads as expired: fencing (epoch + 1) makes a takeover safe, while
-- "never expires" would leave a dead holder's lease held for ever.
local bad = check_int_args({'now_ms', 4, 'ttl_ms', 5, 'maxlen', 7})
  or check_types({KEYS[1], 'hash', KEYS[3], 'stream'}) or check_int_key(KEYS[2])
if bad then return redis.error_reply(bad) end
local holder = redis.call('HGET', KEYS[1], 'holder')
local expires = tonumber(redis.call('HGET', KEYS[1], 'expires_ms') or '0') or 0
local now = tonumber(ARGV[4])
local expires_ms = now + tonumber(ARGV[5])
if holder == ARGV[1] then
  local epoch = redis.call('HGET', KEYS[1], 'epoch')
  if epoch == redis.call('GET', KEYS[2]) then
    -- Never shortened: a late retry must not cut a lease a later renewal extended.
    if expires_ms > expires then redis.call('HSET', KEYS[1], 'expires_ms', expires_ms) end
    return {1, tonumber(epoch)}
  end
end
local dead = ARGV[6] or ''
if holder and holder ~= ARGV[1] and expires > now and (dead == '' or holder ~= dead) then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0'), holder}
end
local how = 'acquired'
if holder and holder ~= ARGV[1] and expires > now then how = 'took-over-dead' end
local epoch = redis.call('INCR', KEYS[2])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'color', ARGV[2], 'release', ARGV[3],
           'epoch', epoch, 'expires_ms', expires_ms, 'acquired_ms', now)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'epoch', epoch, 'holder', ARGV[1],
           'host', string.match(ARGV[1], '^[^:]*:([^:]*):') or '', 'color', ARGV[2],
           'release', ARGV[3], 'at_ms', now, 'how', how, 'prev_holder', holder or '',
           'prev_expires_ms', expires)
return {1, epoch}
