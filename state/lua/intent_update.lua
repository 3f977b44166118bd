-- Record what became of an intent (posted, rejected, failed); fenced.
-- KEYS[1] epoch counter, KEYS[2] intents hash, KEYS[3] open intents hash, KEYS[4] counts hash
-- ARGV[1] caller epoch, ARGV[2] intent id, ARGV[3] intent JSON, ARGV[4] 1 when final
-- Returns 'OK', 'STALE_EPOCH', or 'UNKNOWN' (no such intent was committed); BADARG (nothing
-- written) when the JSON has no known status, BADVALUE when the counts hash is garbage.
local bad = check_types({KEYS[1], 'string', KEYS[2], 'hash', KEYS[3], 'hash'})
if bad then return redis.error_reply(bad) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'STALE_EPOCH' end
local old = redis.call('HGET', KEYS[2], ARGV[2])
if not old then return 'UNKNOWN' end
local counted = intent_count_field(ARGV[3])
if counted == 'intents:unreadable' then
  return redis.error_reply('BADARG intent ' .. ARGV[2] .. ': its JSON has no known status')
end
bad = count_check(KEYS[4])
if bad then return redis.error_reply(bad) end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local delta = {}
count_add(delta, {intent_count_field(old)}, -1)
count_add(delta, {counted}, 1)
count_apply(KEYS[4], delta)
if ARGV[4] == '1' then
  redis.call('HDEL', KEYS[3], ARGV[2])
else
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
end
return 'OK'
