-- Change the control flags and announce the change, atomically: a worker that reads the hash
-- after this sees the new flags, and one subscribed to the channel hears of them at once.
-- KEYS[1] control hash, KEYS[2] (unused, the channel name is ARGV[1])
-- ARGV[1] channel, ARGV[2] action (halt|pause|resume), ARGV[3] now_ms, ARGV[4] reason,
-- ARGV[5] who
-- Returns {seq, receivers, was_halted, was_paused} (flags as they were before the change).
local function set(v)
  if not v then return 0 end
  local s = string.lower(v)
  if s == '0' or s == 'false' or s == 'no' or s == 'off' or s == '' then return 0 end
  return 1  -- garbage counts as set, as everywhere else (state/control.py)
end
local was_halted = set(redis.call('HGET', KEYS[1], 'halted'))
local was_paused = set(redis.call('HGET', KEYS[1], 'paused'))
local action = ARGV[2]
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if action == 'halt' then
  redis.call('HSET', KEYS[1], 'halted', '1', 'halt_reason', ARGV[4], 'halted_ms', ARGV[3],
    'halted_by', ARGV[5], 'halt_seq', seq)
elseif action == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1', 'pause_reason', ARGV[4])
elseif action == 'resume' then
  redis.call('HSET', KEYS[1], 'halted', '0', 'halt_reason', '', 'paused', '0', 'pause_reason', '')
else
  return redis.error_reply('control_set: unknown action ' .. tostring(action))
end
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3])
local receivers = redis.call('PUBLISH', ARGV[1], cjson.encode({action = action, seq = seq}))
return {seq, receivers, was_halted, was_paused}
