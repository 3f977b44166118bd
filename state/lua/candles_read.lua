-- The tick's candle read in one command: for each asset, its recent candles (all of them, or
-- only those the caller has not seen) and the open candles of windows that began before them.
-- One EVALSHA instead of a ZRANGE per asset and per window: at hundreds of assets the client's
-- per-command cost, not Redis, was the tick.
-- KEYS[1] the candle marks hash (feed_write.lua), KEYS[1+i] the candle window of asset i
-- ARGV[1] since_ms (recent = score >= since_ms); then per asset 5 values: its mark field,
--   the window open times to fetch (comma-separated, '' for none), and what the caller holds
--   already: the mark it read them under ('' for nothing), its newest open time, and how many
--   candles it holds from since_ms on.
-- Returns, per asset, {kind, members, mark, {open member or false, ...}}: kind 'new' when
-- members are only the caller's newest candle (as it is now: an unclosed candle is updated in
-- place) and those after it, the caller's older ones being exactly what Redis holds; 'all'
-- when they are every recent candle.
-- The copy is trusted only when the window's mark says no write since it touched anything
-- but the end (same born, rewrite rev <= the caller's rev) AND the candles counted from
-- since_ms up to the caller's newest are as many as it holds: a window trimmed, deleted or
-- written by anyone but the feed fails the count and is read whole.
local out = {}
local since = ARGV[1]
for i = 2, #KEYS do
  local key = KEYS[i]
  local a = 2 + (i - 2) * 5
  local mark = redis.call('HGET', KEYS[1], ARGV[a]) or ''
  local held_mark, held_newest, held_n = ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
  local kind, members = 'all', nil
  if held_mark ~= '' and mark ~= '' then
    local born, _, rw = string.match(mark, '^(%d+):(%d+):(%d+)$')
    local hborn, hrev = string.match(held_mark, '^(%d+):(%d+):%d+$')
    if born ~= nil and born == hborn and tonumber(rw) <= tonumber(hrev) then
      local n = redis.call('ZCOUNT', key, since, held_newest)
      if n == held_n then
        kind = 'new'
        members = redis.call('ZRANGE', key, held_newest, '+inf', 'BYSCORE')
      end
    end
  end
  if members == nil then
    members = redis.call('ZRANGE', key, since, '+inf', 'BYSCORE')
  end
  local opens = {}
  for t in string.gmatch(ARGV[a + 1], '[^,]+') do
    local m = redis.call('ZRANGE', key, t, t, 'BYSCORE')
    opens[#opens + 1] = m[1] or false
  end
  out[i - 1] = {kind, members, mark, opens}
end
return out
