-- Adopt orders the venue has and no intent knows (kernel/adopt.py): each is recorded as the
-- entry intent of its slot-window, so that the window counts as entered and nothing posts a
-- second order for it. Fenced by the epoch; unlike intent_commit it does not look at the halt
-- flag: recording an order that already exists is not trading.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash,
-- KEYS[4] counts hash (_counts.lua)
-- ARGV[1] caller epoch, then per intent 3 values: its id, its JSON, 1 when final (kept out
-- of the open hash)
-- Returns one verdict per intent, in order: 'OK', 'STALE_EPOCH', or 'DUPLICATE' (an intent
-- of that id exists: nothing is written for it); BADVALUE (nothing written) when a key it
-- writes has the wrong type or the counts hash is garbage, BADARG when a JSON has no known
-- status.
if (#ARGV - 1) % 3 ~= 0 then return redis.error_reply('BADARG ARGV: not an id, a JSON and a flag per intent') end
local n = (#ARGV - 1) / 3
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash'})
if bad then return redis.error_reply(bad) end
local out = {}
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  for j = 1, n do out[j] = 'STALE_EPOCH' end
  return out
end
bad = count_check(KEYS[4])
if bad then return redis.error_reply(bad) end
for j = 1, n do
  if intent_count_field(ARGV[3 * j]) == 'intents:unreadable' then
    return redis.error_reply('BADARG intent ' .. ARGV[3 * j - 1] .. ': its JSON has no known status')
  end
end
local delta, seen = {}, {}
for j = 1, n do
  local id, json = ARGV[3 * j - 1], ARGV[3 * j]
  if seen[id] or redis.call('HEXISTS', KEYS[2], id) == 1 then
    out[j] = 'DUPLICATE'
  else
    seen[id] = true
    redis.call('HSET', KEYS[2], id, json)
    if ARGV[3 * j + 1] ~= '1' then redis.call('HSET', KEYS[3], id, json) end
    count_add(delta, {intent_count_field(json)}, 1)
    out[j] = 'OK'
  end
end
count_apply(KEYS[4], delta)
return out
