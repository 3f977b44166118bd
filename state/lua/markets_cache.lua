-- Cache markets found at the venue, each with its TTL, in one command (a thousand slots
-- entering together find a thousand markets in one tick).
-- KEYS[i] the market key of market i
-- ARGV[2i-1] its JSON, ARGV[2i] its TTL in seconds
if #ARGV ~= 2 * #KEYS then return redis.error_reply('BADARG ARGV: not a JSON and a TTL per market') end
for i = 1, #KEYS do
  local bad = check_int_args({'ttl_s', 2 * i})
  if bad then return redis.error_reply(bad) end
  if tonumber(ARGV[2 * i]) <= 0 then return redis.error_reply('BADARG ttl_s: ' .. ARGV[2 * i] .. ' is not positive') end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
