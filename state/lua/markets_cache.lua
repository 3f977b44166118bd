-- Cache markets found at the venue, each with its TTL, in one command (a thousand slots
-- entering together find a thousand markets in one tick).
-- KEYS[i] the market key of market i
-- ARGV[2i-1] its JSON, ARGV[2i] its TTL in seconds
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
