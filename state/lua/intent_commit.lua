-- Commit order intents: the fenced write that stands between decisions and the venue.
-- One call for every intent of a tick (a thousand slots entering together cost one command).
-- KEYS[1] epoch counter, KEYS[2] control hash, KEYS[3] intents hash, KEYS[4] open intents hash
-- ARGV[1] caller epoch, then per intent: its id (slot:window:leg), its JSON
-- Returns one verdict per intent, in order: 'OK', 'STALE_EPOCH' (a newer lease holder
-- exists), 'HALTED' (halt flag set, or unreadable: a garbage value fails safe), or
-- 'DUPLICATE' (this intent id was committed before).
local n = (#ARGV - 1) / 2
local function all(verdict)
  local out = {}
  for j = 1, n do out[j] = verdict end
  return out
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return all('STALE_EPOCH') end
local halted = redis.call('HGET', KEYS[2], 'halted')
if halted then
  local h = string.lower(halted)
  if h ~= '0' and h ~= 'false' and h ~= 'no' and h ~= 'off' and h ~= '' then return all('HALTED') end
end
local out = {}
for j = 1, n do
  local id, body = ARGV[2 * j], ARGV[2 * j + 1]
  if redis.call('HSETNX', KEYS[3], id, body) == 0 then
    out[j] = 'DUPLICATE'
  else
    redis.call('HSET', KEYS[4], id, body)
    out[j] = 'OK'
  end
end
return out
