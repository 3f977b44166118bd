-- The tick's candle read in one command: for each asset, its recent candles and the open
-- candles of windows that began before them. One EVALSHA instead of a ZRANGE per asset and
-- per window: at hundreds of assets the client's per-command cost, not Redis, was the tick.
-- KEYS[i] the candle window of asset i
-- ARGV[1] since_ms (recent = score >= since_ms); ARGV[1+i] asset i's window open times to
-- fetch, comma-separated ('' for none)
-- Returns, per asset, {recent members, {open member or false, ...}}.
local out = {}
for i, key in ipairs(KEYS) do
  local recent = redis.call('ZRANGE', key, ARGV[1], '+inf', 'BYSCORE')
  local opens = {}
  local wanted = ARGV[i + 1] or ''
  for t in string.gmatch(wanted, '[^,]+') do
    local m = redis.call('ZRANGE', key, t, t, 'BYSCORE')
    opens[#opens + 1] = m[1] or false
  end
  out[i] = {recent, opens}
end
return out
