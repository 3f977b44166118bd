-- Shared fragment, prepended by state/scripts.py to every script that changes the intents or
-- positions hashes: the counters of the counts hash (state/keys.py counts()), kept in step in
-- the same atomic script so that `baton status`, /metrics and /pnl read a few numbers instead
-- of every record ever kept.
-- A record is classified by its top-level "status" (and a position's "won"), as
-- state/counts.py's scan classifies it: inside a JSON string a quote is escaped, so the first
-- `"status":"` is the top-level field. Anything else counts as 'unreadable' (then `baton
-- status` reports it), the same way here and in counts_recount.lua.
local INTENT_STATUSES = {committed = true, posted = true, filled = true, rejected = true, failed = true}

-- The top-level string field `name` of a record's JSON: a plain search for the compact form
-- our writers write (fast: the backfill classifies millions), else a pattern that allows
-- whitespace around the colon.
local function json_word(json, name)
  local _, e = string.find(json, '"' .. name .. '":"', 1, true)
  if e then return string.match(json, '^(%l+)"', e + 1) end
  return string.match(json, '"' .. name .. '"%s*:%s*"(%l+)"')
end

-- Whether the top-level `won` of a position's JSON is true.
local function json_won(json)
  local _, e = string.find(json, '"won":', 1, true)
  if e then return string.match(json, '^%s*true', e + 1) ~= nil end
  return string.find(json, '"won"%s*:%s*true') ~= nil
end

-- 'intents:<status>' or 'intents:unreadable'; nil for no record.
local function intent_count_field(json)
  if not json then return nil end
  local st = json_word(json, 'status')
  if st and INTENT_STATUSES[st] then return 'intents:' .. st end
  return 'intents:unreadable'
end

-- The top-level integer field `name` of a record's JSON, as a number; nil when absent. Our
-- field names are unique inside a record's JSON ('"shares_micros":' is not inside
-- '"sold_shares_micros":', the quote comes first).
local function json_int(json, name)
  local _, e = string.find(json, '"' .. name .. '":', 1, true)
  if e then return tonumber(string.match(json, '^%s*(%-?%d+)', e + 1)) end
  return tonumber(string.match(json, '"' .. name .. '"%s*:%s*(%-?%d+)'))
end

-- The fields a position record counts in: {'positions:open'}, {'positions:closed'} (sold
-- before resolution), {'positions:settled'} or {'positions:settled', 'positions:won'},
-- {'positions:unreadable'}; {} for no record.
local function position_count_fields(json)
  if not json then return {} end
  local st = json_word(json, 'status')
  if st == 'open' then return {'positions:open'} end
  if st == 'closed' then return {'positions:closed'} end
  if st == 'settled' then
    if json_won(json) then return {'positions:settled', 'positions:won'} end
    return {'positions:settled'}
  end
  return {'positions:unreadable'}
end

local COUNT_FIELDS = {'intents:committed', 'intents:posted', 'intents:filled', 'intents:rejected',
  'intents:failed', 'intents:unreadable', 'positions:open', 'positions:settled', 'positions:won',
  'positions:unreadable', 'positions:closed'}

-- Before a script's first write: nil when the counts hash can take its HINCRBYs (absent, or a
-- hash whose counters are integers), else a BADVALUE error's text (as _check.lua's checks
-- say it): an HINCRBY failing half-way would leave the script's earlier writes behind.
local function count_check(counts)
  local t = redis.call('TYPE', counts)['ok']
  if t == 'none' then return nil end
  if t ~= 'hash' then return 'BADVALUE ' .. counts .. ' (type): holds a ' .. t .. ', not a hash' end
  local got = redis.call('HMGET', counts, unpack(COUNT_FIELDS))
  for i, f in ipairs(COUNT_FIELDS) do
    local v = got[i]
    if v and (not string.match(v, '^%-?%d+$') or #v > 18) then
      return 'BADVALUE ' .. counts .. ' ' .. f .. ': holds ' .. string.format('%q', string.sub(v, 1, 40))
        .. ', not an integer'
    end
  end
  return nil
end

-- Adds `by` to each field of `fields` in the table of pending changes `delta`.
local function count_add(delta, fields, by)
  for _, f in ipairs(fields) do delta[f] = (delta[f] or 0) + by end
end

-- One HINCRBY per field that moved: a batch of a thousand fills costs a few commands.
local function count_apply(counts, delta)
  for f, by in pairs(delta) do
    if by ~= 0 then redis.call('HINCRBY', counts, f, by) end
  end
end
