-- Count the intents and positions hashes into the counts hash (_counts.lua's fields): the
-- backfill for data written before the counts existed, or by code that did not keep them (a
-- rollback to such a release), and the repair when the counts disagree with the hashes'
-- sizes. A page at a time, so that no call holds Redis for long (a week of 1,024 slots is
-- millions of records); run by a new lease holder before its first tick (state/counts.py).
-- KEYS[1] counts hash, KEYS[2] intents hash, KEYS[3] positions hash, KEYS[4] open positions hash
-- ARGV[1] the step:
--   'begin', ARGV[2] '1' to count again whatever the counts say, ARGV[3] at_ms
--     Returns 0 (the counts agree with the hashes: nothing to do) or 1: the counts hash is
--     reset to {recounting = at_ms} (readers then count the hashes themselves).
--   'page', ARGV[2] 'intents' or 'positions', ARGV[3] HSCAN cursor, ARGV[4] HSCAN COUNT
--     Adds one page to the sums being built (fields b:<count field>). Returns the next cursor
--     ('0' when the hash has been gone through), or 'LOST' (no count in progress: another
--     began since, or one finished).
--   'finish', ARGV[2] at_ms
--     Installs the counts (with counted_ms = at_ms). Returns 1, or 'LOST'.
-- Between pages only the settle program can change these hashes (the lease holder counting
-- has not begun to trade; an older holder's writes are fenced out): settle_position.lua,
-- while `recounting` is set, notes each position it settles (field settled:<id>). A page
-- skips open positions and noted ones; 'finish' counts the open ones from the open hash
-- and the noted ones as they are then. Since no field is added or removed while counting,
-- the hashes are not resized and HSCAN returns each field once.
local function sum(counts, prefix, except)
  local n = 0
  for i = 1, #counts, 2 do
    local f = counts[i]
    if string.sub(f, 1, #prefix) == prefix and f ~= except then
      n = n + (tonumber(counts[i + 1]) or 0)
    end
  end
  return n
end

-- The same test as a reader's (state/counts.py counts_from).
local function agree()
  if redis.call('HEXISTS', KEYS[1], 'counted_ms') == 0 then return false end
  local counts = redis.call('HGETALL', KEYS[1])
  for i = 2, #counts, 2 do
    local n = tonumber(counts[i])
    if not n or n < 0 then return false end
  end
  return sum(counts, 'intents:') == redis.call('HLEN', KEYS[2])
    and sum(counts, 'positions:', 'positions:won') == redis.call('HLEN', KEYS[3])
    and tonumber(redis.call('HGET', KEYS[1], 'positions:open') or '0') == redis.call('HLEN', KEYS[4])
end

local step = ARGV[1]
if step == 'begin' then
  if ARGV[2] ~= '1' and agree() then return 0 end
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'recounting', ARGV[3])
  return 1
end
if redis.call('HEXISTS', KEYS[1], 'recounting') == 0 then return 'LOST' end

if step == 'page' then
  local positions = ARGV[2] == 'positions'
  local page = redis.call('HSCAN', positions and KEYS[3] or KEYS[2], ARGV[3], 'COUNT', ARGV[4])
  local kv, delta, noted = page[2], {}, {}
  if positions then
    -- The positions settled since the count began (few: the counts hash holds little else).
    local counts = redis.call('HGETALL', KEYS[1])
    for i = 1, #counts, 2 do
      if string.sub(counts[i], 1, 8) == 'settled:' then noted[string.sub(counts[i], 9)] = true end
    end
  end
  for i = 1, #kv, 2 do
    if positions then
      local fields = position_count_fields(kv[i + 1])
      if fields[1] ~= 'positions:open' and not noted[kv[i]] then count_add(delta, fields, 1) end
    else
      count_add(delta, {intent_count_field(kv[i + 1])}, 1)
    end
  end
  for f, n in pairs(delta) do redis.call('HINCRBY', KEYS[1], 'b:' .. f, n) end
  return page[1]
end

if step == 'finish' then
  local delta = {}
  local counts = redis.call('HGETALL', KEYS[1])
  for i = 1, #counts, 2 do
    local f = counts[i]
    if string.sub(f, 1, 2) == 'b:' then
      delta[string.sub(f, 3)] = (delta[string.sub(f, 3)] or 0) + tonumber(counts[i + 1])
    elseif string.sub(f, 1, 8) == 'settled:' then
      count_add(delta, position_count_fields(redis.call('HGET', KEYS[3], string.sub(f, 9))), 1)
    end
  end
  delta['positions:open'] = (delta['positions:open'] or 0) + redis.call('HLEN', KEYS[4])
  redis.call('DEL', KEYS[1])
  -- Every field, zeros too: a reader finds each number it shows.
  for st in pairs(INTENT_STATUSES) do delta['intents:' .. st] = delta['intents:' .. st] or 0 end
  for _, f in ipairs(COUNT_FIELDS) do delta[f] = delta[f] or 0 end
  for f, n in pairs(delta) do redis.call('HSET', KEYS[1], f, n) end
  redis.call('HSET', KEYS[1], 'counted_ms', ARGV[2])
  return 1
end
return redis.error_reply('BADARG step: ' .. tostring(step) .. ' is not begin, page or finish')
