-- Append one tick to the journal, fenced, and at most once per tick index.
-- KEYS[1] epoch counter, KEYS[2] journal stream, KEYS[3] stats hash
-- ARGV[1] caller epoch, ARGV[2] tick index, ARGV[3] missed ticks before this one,
-- ARGV[4] started_ms, ARGV[5] stream MAXLEN, ARGV[6..] field/value pairs of the entry
-- Returns 'OK', 'STALE_EPOCH', 'DUPLICATE' (this tick or a later one is journaled), or
-- 'REBASED <what stats.last_tick held>' (journaled, after the guard was rebuilt: see below);
-- a BADVALUE error, having written nothing, when a counter it adds to cannot be read.
--
-- The guard is stats.last_tick, a copy of the newest entry's tick that this script keeps in
-- step with the stream. A copy that is not an integer, or that lies more than AHEAD_MS past
-- this tick's start, was not written by a holder whose clock agrees with ours: garbage, or a
-- clock gone wrong. Trusted, it would refuse every tick as DUPLICATE while trading goes on,
-- and the journal would fall silent. Instead the guard is rebuilt from the stream itself
-- (its newest entry, if that one is sane), the tick is journaled when it is new to that, and
-- the answer says so: the worker reports it and blocks entries for the tick whose read found
-- the guard unreadable (kernel/journal_guard.py). A tick re-run within AHEAD_MS of a later
-- one (a successor whose clock is a little behind) is still a DUPLICATE: nothing is lost.
local AHEAD_MS = 60000
local bad = check_types({KEYS[1], 'string', KEYS[2], 'stream', KEYS[3], 'hash'})
  or check_int_args({'tick', 2, 'missed', 3, 'started_ms', 4, 'maxlen', 5})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
bad = check_int_fields(KEYS[3], {'ticks_done', 'ticks_missed'})
if bad then return redis.error_reply(bad) end
local tick, started = tonumber(ARGV[2]), tonumber(ARGV[4])
-- A tick index is sane when it is an integer whose boundary is at most AHEAD_MS past this
-- tick's start (the tick length is started / tick, to well under a millisecond).
local function sane(v)
  if not v or int_problem(v, 15) then return false end
  return tick <= 0 or (tonumber(v) - tick) * (started / tick) <= AHEAD_MS
end
local raw = redis.call('HGET', KEYS[3], 'last_tick')
local last, rebased = -1, nil
if not raw then
  last = -1
elseif sane(raw) then
  last = tonumber(raw)
else
  rebased = raw
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
  if newest then
    local f = newest[2]
    for i = 1, #f, 2 do
      if f[i] == 'tick' and sane(f[i + 1]) then last = tonumber(f[i + 1]) end
    end
  end
end
if tick <= last then
  if rebased then redis.call('HSET', KEYS[3], 'last_tick', string.format('%d', last)) end
  return 'DUPLICATE'
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
if rebased then
  fields[#fields + 1] = 'last_tick_was'
  fields[#fields + 1] = string.sub(rebased, 1, 40)
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
redis.call('HSET', KEYS[3], 'last_tick', ARGV[2], 'last_tick_ms', ARGV[4])
redis.call('HINCRBY', KEYS[3], 'ticks_done', 1)
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[3], 'ticks_missed', ARGV[3]) end
if rebased then return 'REBASED ' .. shown(rebased) end
return 'OK'
