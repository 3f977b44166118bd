-- Record what became of an intent (posted, rejected, failed); fenced.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash
-- ARGV[1] caller epoch, ARGV[2] intent id, ARGV[3] intent JSON, ARGV[4] 1 when final
-- Returns 'OK', 'STALE_EPOCH', or 'UNKNOWN' (no such intent was committed); a BADVALUE error,
-- having written nothing, when a key has the wrong type (_check.lua).
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 0 then return 'UNKNOWN' end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[3], ARGV[2])
else
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
end
return 'OK'
