-- Commit an order intent: the fenced write that stands between a decision and the venue.
-- KEYS[1] epoch counter, KEYS[2] control hash, KEYS[3] intents hash, KEYS[4] open intents hash
-- ARGV[1] caller epoch, ARGV[2] intent id (slot:window:leg), ARGV[3] intent JSON
-- Returns 'OK', 'STALE_EPOCH' (a newer lease holder exists), 'HALTED' (halt flag set, or
-- unreadable: a garbage value fails safe), or 'DUPLICATE' (this intent id was committed before).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
local halted = redis.call('HGET', KEYS[2], 'halted')
if halted then
  local h = string.lower(halted)
  if h ~= '0' and h ~= 'false' and h ~= 'no' and h ~= 'off' and h ~= '' then return 'HALTED' end
end
if redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[3]) == 0 then return 'DUPLICATE' end
redis.call('HSET', KEYS[4], ARGV[2], ARGV[3])
return 'OK'
