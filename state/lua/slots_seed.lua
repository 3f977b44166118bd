-- Seed the configured slots (BATON_ASSETS x BATON_TIMEFRAMES) into a Redis that lacks them:
-- a slot already there keeps the operator's edits, and one an operator removed stays removed
-- (its id is in the removed set), whatever the settings say.
-- KEYS[1] slots hash
-- KEYS[2] removed slot ids (set)
-- ARGV    slot id, Slot JSON, slot id, Slot JSON, ...
-- Returns the number of slots created.
local bad = check_types({KEYS[1], 'hash', KEYS[2], 'set'})
if bad then return redis.error_reply(bad) end
local created = 0
for i = 1, #ARGV, 2 do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    created = created + redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return created
