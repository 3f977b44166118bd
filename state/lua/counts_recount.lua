-- Count the intents and positions hashes into the counts hash (_counts.lua's fields), once:
-- the backfill for data written before the counts existed, or by code that did not keep
-- them (a rollback to such a release), and the repair when the counts disagree with the
-- hashes' sizes. Cheap when nothing is wrong: a few O(1) commands, no scan.
-- KEYS[1] counts hash, KEYS[2] intents hash, KEYS[3] positions hash, KEYS[4] open positions hash
-- ARGV[1] '1' to count again whatever the counts say, ARGV[2] at_ms (recorded as counted_ms)
-- Returns 0 (the counts agree with the hashes: nothing done) or 1 (counted again).
-- Counting runs inside this one script, so no write can fall between the scan and the
-- result; the scan reads a hash a page at a time (HSCAN), which returns each field exactly
-- once here because no write (and so no rehashing) can happen while a script runs.
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

if ARGV[1] ~= '1' and agree() then return 0 end
local delta = {}
local function scan(hash, fields_of)
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', hash, cursor, 'COUNT', 1000)
    cursor = page[1]
    local kv = page[2]
    for i = 2, #kv, 2 do count_add(delta, fields_of(kv[i]), 1) end
  until cursor == '0'
end
scan(KEYS[2], function(json) return {intent_count_field(json)} end)
scan(KEYS[3], position_count_fields)
redis.call('DEL', KEYS[1])
-- Every field, zeros too: a reader finds each number it shows.
for st in pairs(INTENT_STATUSES) do delta['intents:' .. st] = delta['intents:' .. st] or 0 end
for _, f in ipairs({'intents:unreadable', 'positions:open', 'positions:settled', 'positions:won',
                    'positions:unreadable'}) do
  delta[f] = delta[f] or 0
end
for f, n in pairs(delta) do redis.call('HSET', KEYS[1], f, n) end
redis.call('HSET', KEYS[1], 'counted_ms', ARGV[2])
return 1
