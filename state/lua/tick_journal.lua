-- Append one tick to the journal, fenced, and at most once per tick index.
-- KEYS[1] epoch counter, KEYS[2] journal stream, KEYS[3] stats hash
-- ARGV[1] caller epoch, ARGV[2] tick index, ARGV[3] missed ticks before this one,
-- ARGV[4] started_ms, ARGV[5] stream MAXLEN, ARGV[6..] field/value pairs of the entry
-- Returns 'OK', 'STALE_EPOCH', or 'DUPLICATE' (this tick or a later one is journaled).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
local last = tonumber(redis.call('HGET', KEYS[3], 'last_tick') or '-1') or -1
if tonumber(ARGV[2]) <= last then return 'DUPLICATE' end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
redis.call('HSET', KEYS[3], 'last_tick', ARGV[2], 'last_tick_ms', ARGV[4])
redis.call('HINCRBY', KEYS[3], 'ticks_done', 1)
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[3], 'ticks_missed', ARGV[3]) end
return 'OK'
