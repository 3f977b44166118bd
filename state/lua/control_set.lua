-- Change the control flags and announce the change, atomically: a worker that reads the hash
-- after this sees the new flags, and one subscribed to the channel hears of them at once.
-- KEYS[1] control hash
-- ARGV[1] channel, ARGV[2] action (halt|pause|resume), ARGV[3] now_ms, ARGV[4] reason,
-- ARGV[5] who, ARGV[6] expected seq ('' = any): a resume made on a view of the flags that is
-- no longer current (a halt came in between) is refused, so it cannot lift a halt unseen,
-- ARGV[7] request id ('' = none): clients retry a command whose reply was lost, and the
-- retry of a change that did land must answer as the change did (a resume would otherwise
-- be refused by its own seq, a halt counted twice), so the last change keeps its id and reply
-- Returns {seq, receivers, was_halted, was_paused, reset} (flags as they were before the
-- change; reset = 1 when the key held another type and was replaced), or {-1, current seq}
-- when ARGV[6] did not match.
local function set(v)
  if not v then return 0 end
  local s = string.lower(v)
  if s == '0' or s == 'false' or s == 'no' or s == 'off' or s == '' then return 0 end
  return 1  -- garbage counts as set, as everywhere else (state/control.py)
end
local action = ARGV[2]
if action ~= 'halt' and action ~= 'pause' and action ~= 'resume' then
  return redis.error_reply('control_set: unknown action ' .. tostring(action))
end
if check_int_args({'now_ms', 3}) then
  return redis.error_reply('control_set: now_ms ' .. shown(ARGV[3]) .. ' is not an integer')
end
-- Garbage of the wrong type in the control key must not make a halt impossible.
local reset = 0
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then
  redis.call('DEL', KEYS[1])
  reset = 1
end
if ARGV[7] ~= nil and ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'request_id') == ARGV[7] then
  local ok, reply = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'request_reply') or '')
  if ok and type(reply) == 'table' and #reply == 5 then
    for i = 1, 5 do
      if type(reply[i]) ~= 'number' then ok = false end
    end
    if ok then return reply end
  end
  -- An unreadable stored reply: treat the request as new (a halt halts again, at worst).
end
-- The counter is read as state/control.py reads it: digits only, else 0 (garbage).
local raw = redis.call('HGET', KEYS[1], 'seq')
local current, garbage = 0, false
if raw then
  if string.match(raw, '^%d+$') and #raw <= 15 then current = tonumber(raw) else garbage = true end
end
if ARGV[6] ~= nil and ARGV[6] ~= '' and tonumber(ARGV[6]) ~= current then
  return {-1, current}
end
local was_halted = set(redis.call('HGET', KEYS[1], 'halted'))
local was_paused = set(redis.call('HGET', KEYS[1], 'paused'))
local seq = current + 1
if garbage then
  -- Restarting at 1 would fall below seqs a worker has already handled (its halt would go
  -- unacknowledged): go on from the clock instead, above any seq handed out before.
  seq = math.max(seq, tonumber(ARGV[3]))
end
redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq))
if action == 'halt' then
  redis.call('HSET', KEYS[1], 'halted', '1', 'halt_reason', ARGV[4], 'halted_ms', ARGV[3],
    'halted_by', ARGV[5], 'halt_seq', seq)
elseif action == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1', 'pause_reason', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'halted', '0', 'halt_reason', '', 'halt_seq', '0', 'paused', '0',
    'pause_reason', '')
end
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3])
local receivers = redis.call('PUBLISH', ARGV[1], cjson.encode({action = action, seq = seq}))
local reply = {seq, receivers, was_halted, was_paused, reset}
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'request_id', ARGV[7], 'request_reply', cjson.encode(reply))
end
return reply
