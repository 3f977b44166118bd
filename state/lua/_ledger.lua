-- Shared fragment, prepended by state/scripts.py to every script that books money.
-- ledger_check(stream, totals, refs, day, kind, amount_arg, pnl_arg, at_arg): every key and
-- field ledger_append will touch, checked before the script's first write (_check.lua); the
-- last three are ARGV indexes. nil when all is well, else the error's text.
-- ledger_append(stream, totals, refs, day, ref, kind, amount, pnl, at_ms, epoch, fee)
-- Appends one entry unless `ref` was booked before, and keeps the derived running sums
-- (cash, realised PnL, the day's PnL, the fees) in step in the same atomic script. `fee`
-- (optional) is the venue's fee, already inside `amount`: the entry names it. Call it only
-- after ledger_check passed: it cannot fail half-way then.
local function ledger_check(stream, totals, refs, day, kind, amount_arg, pnl_arg, at_arg)
  return check_types({stream, 'stream', totals, 'hash', refs, 'set', day, 'hash'})
    or check_int_fields(totals, {'cash_micros', 'entries', kind .. '_micros', 'realized_pnl_micros', 'fee_micros'})
    or check_int_fields(day, {'realized_pnl_micros'})
    or check_int_args({'amount_micros', amount_arg, 'pnl_micros', pnl_arg, 'at_ms', at_arg})
end

local function ledger_append(stream, totals, refs, day, ref, kind, amount, pnl, at_ms, epoch, fee)
  if redis.call('SADD', refs, ref) == 0 then
    return 0
  end
  fee = fee or '0'
  redis.call('XADD', stream, '*', 'kind', kind, 'amount_micros', amount, 'ref', ref,
             'at_ms', at_ms, 'epoch', epoch, 'pnl_micros', pnl, 'fee_micros', fee)
  if tonumber(fee) ~= 0 then redis.call('HINCRBY', totals, 'fee_micros', fee) end
  redis.call('HINCRBY', totals, 'cash_micros', amount)
  redis.call('HINCRBY', totals, 'entries', 1)
  redis.call('HINCRBY', totals, kind .. '_micros', amount)
  if tonumber(pnl) ~= 0 then
    redis.call('HINCRBY', totals, 'realized_pnl_micros', pnl)
    redis.call('HINCRBY', day, 'realized_pnl_micros', pnl)
    redis.call('EXPIRE', day, 8 * 86400)
  end
  return 1
end
