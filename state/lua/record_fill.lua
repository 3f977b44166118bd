-- Fills: each intent becomes final, its position opens and its cost is booked, atomically.
-- One call for every fill of a tick.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash,
-- KEYS[4] positions hash, KEYS[5] open positions hash, KEYS[6] ledger stream,
-- KEYS[7] ledger totals, KEYS[8] ledger refs, KEYS[9] counts hash (_counts.lua)
-- ARGV[1] caller epoch, then per fill 7 values: intent id, intent JSON, position id,
-- position JSON, cost in micros (positive, the fee included), at_ms, fee in micros (>= 0)
-- Returns one verdict per fill, in order: 'OK', 'STALE_EPOCH', or 'ALREADY' (this fill was
-- booked before: nothing changes); or a BADVALUE error, having written nothing, when a key or
-- running sum it would write cannot be used (_check.lua, and the counts: _counts.lua): the
-- intents stay open, and their fills are booked by reconciliation (kernel/reconcile.py) once
-- the value is repaired; BADARG when an intent's JSON has no known status or a position's is
-- not an open one (the counts could not say what it is).
-- Each fill is booked as ledger_append (_ledger.lua) would book it: a `buy` entry under the
-- ref 'buy:<intent id>', at most once, with no PnL (so the day's PnL is not touched) and the
-- fee it includes (fee_micros; the totals' fee_micros sums them). The
-- lookups, the hash writes and the running sums of the whole batch are made once each, with
-- many fields, rather than once per fill: at a thousand fills per tick the number of
-- commands the script ran was most of its time.
local W = 7
if (#ARGV - 1) % W ~= 0 then
  return redis.error_reply('BADARG ARGV: ' .. (#ARGV - 1) .. ' values after the epoch, not 7 per fill')
end
local n = (#ARGV - 1) / W
local out = {}
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'hash',
  KEYS[5], 'hash', KEYS[6], 'stream', KEYS[7], 'hash', KEYS[8], 'set'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  for j = 1, n do out[j] = 'STALE_EPOCH' end
  return out
end
-- Everything the writes below depend on, before the first: the running sums they add to and
-- the amounts they add (their sum kept exact in Lua's doubles: below 2^53).
bad = check_int_fields(KEYS[7], {'cash_micros', 'entries', 'buy_micros', 'fee_micros'}) or count_check(KEYS[9])
if bad then return redis.error_reply(bad) end
local sum = 0
for j = 1, n do
  local a = 1 + (j - 1) * W
  bad = check_int_args({'cost_micros', a + 5, 'at_ms', a + 6, 'fee_micros', a + 7})
  if bad then return redis.error_reply(bad) end
  local cost, fee = tonumber(ARGV[a + 5]), tonumber(ARGV[a + 7])
  if fee < 0 or fee > math.abs(cost) then
    return redis.error_reply('BADARG fee_micros (ARGV[' .. (a + 7) .. ']): ' .. ARGV[a + 7]
      .. ' is not within the cost of ' .. ARGV[a + 5])
  end
  sum = sum + math.abs(cost)
end
if sum >= 2 ^ 53 then return redis.error_reply('BADARG cost_micros: the batch sums past 2^53') end
local STEP = 1000
local pos_ids, refs, intent_ids = {}, {}, {}
for j = 1, n do
  local a = 1 + (j - 1) * W
  intent_ids[j] = ARGV[a + 1]
  pos_ids[j] = ARGV[a + 3]
  refs[j] = 'buy:' .. ARGV[a + 1]
  if intent_count_field(ARGV[a + 2]) == 'intents:unreadable' then
    return redis.error_reply('BADARG intent ' .. ARGV[a + 1] .. ': its JSON has no known status')
  end
  if position_count_fields(ARGV[a + 4])[1] ~= 'positions:open' then
    return redis.error_reply('BADARG position ' .. ARGV[a + 3] .. ': its JSON is not an open position')
  end
end
-- Which positions exist already, which refs were booked, and what each intent was (for the
-- counts): one command per slice each.
local exists, booked_before, intent_was = {}, {}, {}
for i = 1, n, STEP do
  local last = math.min(i + STEP - 1, n)
  local got = redis.call('HMGET', KEYS[4], unpack(pos_ids, i, last))
  local member = redis.call('SMISMEMBER', KEYS[8], unpack(refs, i, last))
  local was = redis.call('HMGET', KEYS[2], unpack(intent_ids, i, last))
  for k = 1, #got do
    exists[i + k - 1] = got[k]
    booked_before[i + k - 1] = member[k] == 1
    intent_was[i + k - 1] = was[k]
  end
end
local intents, done, positions, new_refs, booked = {}, {}, {}, {}, 0
local total, fees = 0, 0
local seen_pos, seen_ref, seen_intent, delta = {}, {}, {}, {}
for j = 1, n do
  local a = 1 + (j - 1) * W
  local intent_id, pos_id, cost = ARGV[a + 1], ARGV[a + 3], tonumber(ARGV[a + 5])
  if exists[j] or seen_pos[pos_id] then
    out[j] = 'ALREADY'
  else
    seen_pos[pos_id] = true
    -- The intent leaves what it was (or what an earlier fill of this call made it) for what
    -- it is now; the position is new (an existing one is ALREADY).
    count_add(delta, {seen_intent[intent_id] or intent_count_field(intent_was[j])}, -1)
    seen_intent[intent_id] = intent_count_field(ARGV[a + 2])
    count_add(delta, {seen_intent[intent_id]}, 1)
    count_add(delta, {'positions:open'}, 1)
    intents[#intents + 1] = intent_id
    intents[#intents + 1] = ARGV[a + 2]
    done[#done + 1] = intent_id
    positions[#positions + 1] = pos_id
    positions[#positions + 1] = ARGV[a + 4]
    local ref = refs[j]
    if not booked_before[j] and not seen_ref[ref] then
      seen_ref[ref] = true
      new_refs[#new_refs + 1] = ref
      redis.call('XADD', KEYS[6], '*', 'kind', 'buy', 'amount_micros', string.format('%.0f', -cost), 'ref', ref,
                 'at_ms', ARGV[a + 6], 'epoch', ARGV[1], 'pnl_micros', 0, 'fee_micros', ARGV[a + 7])
      total = total + cost
      fees = fees + tonumber(ARGV[a + 7])
      booked = booked + 1
    end
    out[j] = 'OK'
  end
end
-- Many fields per command, in slices (Lua's unpack has a stack limit of a few thousand).
local function each_slice(cmd, key, list)
  for i = 1, #list, STEP do
    redis.call(cmd, key, unpack(list, i, math.min(i + STEP - 1, #list)))
  end
end
each_slice('HSET', KEYS[2], intents)
each_slice('HDEL', KEYS[3], done)
each_slice('HSET', KEYS[4], positions)
each_slice('HSET', KEYS[5], positions)
each_slice('SADD', KEYS[8], new_refs)
count_apply(KEYS[9], delta)
if booked > 0 then
  local minus = string.format('%.0f', -total)
  redis.call('HINCRBY', KEYS[7], 'cash_micros', minus)
  redis.call('HINCRBY', KEYS[7], 'entries', booked)
  redis.call('HINCRBY', KEYS[7], 'buy_micros', minus)
  if fees > 0 then redis.call('HINCRBY', KEYS[7], 'fee_micros', string.format('%.0f', fees)) end
end
return out
