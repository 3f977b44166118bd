-- Append a tick's evaluations to the decision log (state/decisions.py): one XADD per entry to
-- its slot's capped stream, flat fields so that redis-cli reads them. One script call for the
-- whole tick: the worker encodes one JSON array instead of every field of every entry (256
-- entries: about 1 ms of the worker's CPU and 1.7 ms of Redis's, where one XADD each in a
-- pipeline took 5 to 7 ms of the worker's, more than the rest of an entry burst's tick).
-- KEYS[i] the stream of entry i (keys.decision_log(slot))
-- ARGV[1] MAXLEN (approximate: Redis trims whole nodes), ARGV[2] JSON array of the field
--   names, ARGV[3] JSON array of entries, each an array of values in that order, every one a
--   string already (the caller formats numbers: cheaper there than here, where the server is
--   shared; the figures one JSON string)
-- Returns {appended, failed, the first failure's error ('' when none)}: a key that holds
-- another type loses its entry, not the other slots' (the log is a record, never a gate).
local fields = cjson.decode(ARGV[2])
local entries = cjson.decode(ARGV[3])
if type(fields) ~= 'table' or type(entries) ~= 'table' or #entries ~= #KEYS then
  return redis.error_reply('decisions_append: ' .. #KEYS .. ' keys for a different number of entries')
end
local ok, failed, first = 0, 0, ''
for i, e in ipairs(entries) do
  local args = {}
  for j, name in ipairs(fields) do
    args[2 * j - 1] = name
    local v = e[j]
    args[2 * j] = type(v) == 'string' and v or tostring(v or '')
  end
  local res = redis.pcall('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', unpack(args))
  if type(res) == 'table' and res.err then
    failed = failed + 1
    if first == '' then first = KEYS[i] .. ': ' .. tostring(res.err) end
  else
    ok = ok + 1
  end
end
return {ok, failed, first}
