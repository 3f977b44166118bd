-- Exits: each sell intent becomes final, its position is rewritten as the sale left it (a
-- closed one leaves the open set) and the sale is booked, atomically. One call for every
-- exit fill of a tick (few: at most one working exit per slot-window).
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash,
-- KEYS[4] positions hash, KEYS[5] open positions hash, KEYS[6] ledger stream,
-- KEYS[7] ledger totals, KEYS[8] ledger refs, KEYS[9] counts hash (_counts.lua),
-- KEYS[9 + j] the ledger day hash of exit j (the UTC day of its at_ms)
-- ARGV[1] caller epoch, then per exit 10 values: intent id, intent JSON (final), position id,
-- position JSON after the sale, shares_micros the position held before it, exits it had
-- booked before it, proceeds in micros (net of the fee, >= 0), fee in micros, pnl in micros,
-- at_ms
-- Returns one verdict per exit, in order: 'OK'; 'STALE_EPOCH'; 'ALREADY' (its ledger ref
-- 'sell:<intent id>' was booked before: nothing changes); 'SETTLED' (the position is not in
-- the open set: settled, or closed by other sales: nothing written); 'CHANGED' (the stored
-- position holds other shares or another number of exits than the booking was computed
-- from: nothing written, the caller computes again from the stored one). A BADVALUE error,
-- having written nothing, when a key or running sum it would write cannot be used
-- (_check.lua, _counts.lua): the intents stay open and reconciliation books them once the
-- value is repaired; BADARG for an intent JSON that is not final, or a position JSON that is
-- neither open nor closed.
-- Each sale is booked as ledger_append (_ledger.lua) books: a `sell` entry (amount +proceeds,
-- its pnl and fee) at most once; its pnl moves the realised PnL and the day's PnL, so the
-- daily loss limit sees losses taken by exits.
local W = 10
if (#ARGV - 1) % W ~= 0 then
  return redis.error_reply('BADARG ARGV: ' .. (#ARGV - 1) .. ' values after the epoch, not 10 per exit')
end
local n = (#ARGV - 1) / W
if #KEYS ~= 9 + n then
  return redis.error_reply('BADARG KEYS: ' .. #KEYS .. ' keys for ' .. n .. ' exits, not ' .. (9 + n))
end
local out = {}
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'hash',
  KEYS[5], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  for j = 1, n do out[j] = 'STALE_EPOCH' end
  return out
end
-- Everything the writes below depend on, before the first.
bad = count_check(KEYS[9])
if bad then return redis.error_reply(bad) end
for j = 1, n do
  local a = 1 + (j - 1) * W
  bad = ledger_check(KEYS[6], KEYS[7], KEYS[8], KEYS[9 + j], 'sell', a + 7, a + 9, a + 10)
    or check_int_args({'shares_before', a + 5, 'exits_before', a + 6, 'fee_micros', a + 8})
  if bad then return redis.error_reply(bad) end
  if tonumber(ARGV[a + 7]) < 0 then
    return redis.error_reply('BADARG proceeds_micros (ARGV[' .. (a + 7) .. ']): ' .. ARGV[a + 7] .. ' is negative')
  end
  -- A sale is booked once, with its intent final: an intent still working (posted) would
  -- leave the open set while the venue may still fill more of it.
  local st = intent_count_field(ARGV[a + 2])
  if st ~= 'intents:filled' and st ~= 'intents:rejected' and st ~= 'intents:failed' then
    return redis.error_reply('BADARG intent ' .. ARGV[a + 1] .. ': its JSON is not a final intent')
  end
  local f = position_count_fields(ARGV[a + 4])[1]
  if f ~= 'positions:open' and f ~= 'positions:closed' then
    return redis.error_reply('BADARG position ' .. ARGV[a + 3] .. ': its JSON is not an open or closed position')
  end
end
local epoch = ARGV[1]
-- Positions as this call has left them so far (two exits of one position in one call).
local now_json = {}
local delta = {}
for j = 1, n do
  local a = 1 + (j - 1) * W
  local intent_id, pos_id, pos_json = ARGV[a + 1], ARGV[a + 3], ARGV[a + 4]
  local ref = 'sell:' .. intent_id
  local current = now_json[pos_id]
  if current == nil then current = redis.call('HGET', KEYS[5], pos_id) end
  if redis.call('SISMEMBER', KEYS[8], ref) == 1 then
    out[j] = 'ALREADY'
  elseif not current or position_count_fields(current)[1] ~= 'positions:open' then
    out[j] = 'SETTLED'
  elseif json_int(current, 'shares_micros') ~= tonumber(ARGV[a + 5])
      or (json_int(current, 'exits') or 0) ~= tonumber(ARGV[a + 6]) then
    out[j] = 'CHANGED'
  else
    count_add(delta, {intent_count_field(redis.call('HGET', KEYS[2], intent_id))}, -1)
    count_add(delta, {intent_count_field(ARGV[a + 2])}, 1)
    count_add(delta, position_count_fields(redis.call('HGET', KEYS[4], pos_id)), -1)
    local now_counted = position_count_fields(pos_json)
    count_add(delta, now_counted, 1)
    redis.call('HSET', KEYS[2], intent_id, ARGV[a + 2])
    redis.call('HDEL', KEYS[3], intent_id)
    redis.call('HSET', KEYS[4], pos_id, pos_json)
    if now_counted[1] == 'positions:open' then
      redis.call('HSET', KEYS[5], pos_id, pos_json)
      now_json[pos_id] = pos_json
    else
      redis.call('HDEL', KEYS[5], pos_id)
      now_json[pos_id] = false
    end
    ledger_append(KEYS[6], KEYS[7], KEYS[8], KEYS[9 + j], ref, 'sell', ARGV[a + 7], ARGV[a + 9],
                  ARGV[a + 10], epoch, ARGV[a + 8])
    out[j] = 'OK'
  end
end
count_apply(KEYS[9], delta)
return out
