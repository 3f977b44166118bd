-- Append ticks' batches to the input log (state/inputs.py; built by kernel/notes.py between
-- ticks): one XADD per tick, trimmed by age. A script rather than bare XADDs, because it shares
-- a pipeline with the decision log's script: after a Redis restart every EVALSHA of it answers
-- NOSCRIPT and the whole pipeline runs again (state/repo.py run_pipeline), which would append a
-- bare XADD's tick twice; a script's tick is appended once, by the run that knew the script.
-- KEYS[1] the stream (keys.input_log())
-- ARGV[1] MINID in ms: entries whose ids are older are trimmed (approximately: whole nodes)
-- ARGV[2] MAXLEN: then all but about this many newest entries are trimmed (the byte budget,
--   BATON_INPUT_LOG_REDIS_MB, over an entry's recent size; approximately: whole nodes); 0: not
-- ARGV[3..] five per tick, oldest first: tick, at_ms, release, n, data (the encoded batch,
--   binary; empty when the tick evaluated nothing)
-- Returns {entries appended, entries the MAXLEN trim removed (younger than the age limit: the
-- budget cut the retention short)}. A stream key of another type fails the call.
if (#ARGV - 2) % 5 ~= 0 then
  return redis.error_reply('inputs_append: ' .. (#ARGV - 2) .. ' values are not five per tick')
end
local n = 0
for i = 3, #ARGV, 5 do
  redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[1], '*', 'tick', ARGV[i], 'at_ms', ARGV[i + 1],
    'release', ARGV[i + 2], 'n', ARGV[i + 3], 'data', ARGV[i + 4])
  n = n + 1
end
local cut = 0
if tonumber(ARGV[2]) > 0 then
  cut = redis.call('XTRIM', KEYS[1], 'MAXLEN', '~', ARGV[2])
end
return {n, cut}
