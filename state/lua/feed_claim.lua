-- A feed's claim on one piece of the feeds' shared work (the REST backfill of one candle
-- window), so that of the feeds on several hosts one fetches it and the others do not spend
-- the venue's budget on the same rows. Short-lived: a feed that dies holding it only delays
-- the others by its TTL.
-- KEYS[1] the claim (string: the holder, with a TTL)
-- ARGV[1] holder, ARGV[2] TTL in ms: > 0 takes the claim (or renews it, when it is already
--   the holder's); 0 releases it if it is still the holder's
-- Returns 1 when the holder has the claim now (taking) or gave it back (releasing), else 0.
local held = redis.call('GET', KEYS[1])
local ttl = tonumber(ARGV[2])
if ttl == nil or ttl < 0 or ttl ~= math.floor(ttl) then
  return redis.error_reply('BADARG ttl_ms: not a whole number of ms >= 0')
end
if ttl == 0 then
  if held == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
  return 0
end
if held and held ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
return 1
