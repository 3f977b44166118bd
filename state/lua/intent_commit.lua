-- Commit order intents: the fenced write that stands between decisions and the venue.
-- One call for every intent of a tick (a thousand slots entering together cost one command).
-- KEYS[1] epoch counter, KEYS[2] control hash, KEYS[3] intents hash, KEYS[4] open intents hash,
-- KEYS[5] counts hash (_counts.lua)
-- ARGV[1] caller epoch, then per intent: its id (slot:window:leg), its JSON
-- Returns one verdict per intent, in order: 'OK', 'STALE_EPOCH' (a newer lease holder
-- exists), 'HALTED' (halt flag set, or unreadable: a garbage value fails safe), or
-- 'DUPLICATE' (this intent id was committed before, or earlier in the same call); a BADVALUE
-- error, having written nothing, when a key it writes has the wrong type (_check.lua).
-- The ids are looked up with one HMGET and the new ones written with one HSET per hash (in
-- slices: Lua's unpack has a stack limit), not one HSETNX per intent: inside one script
-- that is the same check, made with a few commands instead of thousands.
-- An intent whose JSON has no known status is refused (BADARG, nothing written): the counts
-- could not say what it is; so is a call while the counts hash is garbage (BADVALUE).
local n = (#ARGV - 1) / 2
local function all(verdict)
  local out = {}
  for j = 1, n do out[j] = verdict end
  return out
end
if (#ARGV - 1) % 2 ~= 0 then return redis.error_reply('BADARG ARGV: not an id and a JSON per intent') end
local bad = check_types({KEYS[1], 'string', KEYS[3], 'hash', KEYS[4], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return all('STALE_EPOCH') end
-- A control key of another type cannot say "not halted": fail safe, as a garbage flag does.
if check_types({KEYS[2], 'hash'}) then return all('HALTED') end
local halted = redis.call('HGET', KEYS[2], 'halted')
if halted then
  local h = string.lower(halted)
  if h ~= '0' and h ~= 'false' and h ~= 'no' and h ~= 'off' and h ~= '' then return all('HALTED') end
end
local bad = count_check(KEYS[5])
if bad then return redis.error_reply(bad) end
local STEP = 1000
local ids = {}
for j = 1, n do ids[j] = ARGV[2 * j] end
local there = {}
for i = 1, n, STEP do
  local got = redis.call('HMGET', KEYS[3], unpack(ids, i, math.min(i + STEP - 1, n)))
  for k = 1, #got do there[i + k - 1] = got[k] end
end
local out, fields, seen, delta = {}, {}, {}, {}
for j = 1, n do
  local id = ids[j]
  if there[j] or seen[id] then
    out[j] = 'DUPLICATE'
  else
    local counted = intent_count_field(ARGV[2 * j + 1])
    if counted == 'intents:unreadable' then
      return redis.error_reply('BADARG intent ' .. id .. ': its JSON has no known status')
    end
    count_add(delta, {counted}, 1)
    seen[id] = true
    fields[#fields + 1] = id
    fields[#fields + 1] = ARGV[2 * j + 1]
    out[j] = 'OK'
  end
end
for i = 1, #fields, STEP do
  local last = math.min(i + STEP - 1, #fields)
  redis.call('HSET', KEYS[3], unpack(fields, i, last))
  redis.call('HSET', KEYS[4], unpack(fields, i, last))
end
count_apply(KEYS[5], delta)
return out
