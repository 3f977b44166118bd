-- The tick's candle read in one command: for each asset, its recent candles (all of them, or
-- only those the caller has not seen) and the open candles of windows that began before them.
-- One EVALSHA instead of a ZRANGE per asset and per window: at hundreds of assets the client's
-- per-command cost, not Redis, was the tick.
-- KEYS[1] the candle marks hash (feed_write.lua), KEYS[1+i] the candle window of asset i
-- ARGV[1] now_ms (a candle opening later is garbage from the future and never read: it must
--   not become the last price); then per asset 7 values: its mark field, its since_ms
--   (recent = score >= since_ms: each asset is read as far back as its slots' strategies
--   look, kernel/candle_cache.py Lookbacks), the window open times to fetch
--   (comma-separated, '' for none), and what the caller holds already: the born and rev of
--   the mark it read them under ('' and 0 for nothing), its newest open time, and how many
--   candles it holds from since_ms on.
-- Returns, per asset, {kind, members, mark, {open member or false, ...}}: kind 'wrongtype'
-- (members: the key's type) when the key is not a sorted set; 'new' when
-- members are only the caller's newest candle (as it is now: an unclosed candle is updated in
-- place) and those after it, the caller's older ones being exactly what Redis holds; 'all'
-- when they are every recent candle.
-- The copy is trusted only when the window's mark says no write since it touched anything
-- but the end (same born, rewrite rev <= the caller's rev) AND the candles counted from
-- since_ms up to the caller's newest are as many as it holds: a window trimmed, deleted or
-- written by anyone but the feed fails the count and is read whole.
local now = ARGV[1]
local STRIDE = 7
local n = #KEYS - 1
local fields = {}
for i = 1, n do fields[i] = ARGV[2 + (i - 1) * STRIDE] end
local marks = {}
local marks_type = redis.call('TYPE', KEYS[1])['ok']
if marks_type == 'hash' then -- garbage of another type: no marks, every window read whole
  for i = 1, n, 1000 do -- in slices: Lua's unpack has a stack limit of a few thousand
    local got = redis.call('HMGET', KEYS[1], unpack(fields, i, math.min(i + 999, n)))
    for k = 1, #got do marks[i + k - 1] = got[k] end
  end
end
-- One asset's answer (its key is not of another type); ARGV[a] is its mark field.
local function read_window(key, a, mark)
  local since = ARGV[a + 1]
  local held_born = ARGV[a + 3]
  local members = nil
  local kind = 'all'
  if held_born ~= '' and mark ~= '' then
    local born, rw = string.match(mark, '^(%d+):%d+:(%d+)$')
    if born == held_born and tonumber(rw) <= tonumber(ARGV[a + 4]) then
      local newest = ARGV[a + 5]
      if redis.call('ZCOUNT', key, since, newest) == tonumber(ARGV[a + 6]) then
        kind = 'new'
        members = redis.call('ZRANGE', key, newest, now, 'BYSCORE')
      end
    end
  end
  if members == nil then
    members = redis.call('ZRANGE', key, since, now, 'BYSCORE')
  end
  local opens = {}
  local wanted = ARGV[a + 2]
  if wanted ~= '' then
    for t in string.gmatch(wanted, '[^,]+') do
      local m = redis.call('ZRANGE', key, t, t, 'BYSCORE')
      opens[#opens + 1] = m[1] or false
    end
  end
  return {kind, members, mark, opens}
end
local out = {}
for i = 1, n do
  local key = KEYS[i + 1]
  local mark = marks[i] or ''
  local typ = redis.call('TYPE', key)['ok']
  if typ ~= 'zset' and typ ~= 'none' then
    out[i] = {'wrongtype', typ, mark, {}}
  else
    out[i] = read_window(key, 2 + (i - 1) * STRIDE, mark)
  end
end
return out
