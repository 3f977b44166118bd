-- Record the schema version of a new lease holder whose code writes a newer one; an older
-- holder (a rollback that its successor declared able to read newer data) leaves it as is.
-- KEYS[1] schema version, KEYS[2] readable_by
-- ARGV[1] our version, ARGV[2] the oldest version that can read what we write
-- Returns the version Redis holds afterwards.
local bad = check_int_args({'version', 1, 'readable_by', 2}) or check_int_key(KEYS[1])
  or check_types({KEYS[2], 'string'})
if bad then return redis.error_reply(bad) end
local found = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > found then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
  return tonumber(ARGV[1])
end
return found
