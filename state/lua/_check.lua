-- Shared fragment: the checks a script makes before its first write.
-- Redis does not roll a script back: one that fails half-way (HINCRBY on a garbage total, a
-- command on a key of the wrong type) keeps the writes it made before. So every script checks
-- everything it will read or write first and, on a value it cannot use, returns
--   redis.error_reply('BADVALUE <key> <field>: <what is wrong>')   (stored garbage), or
--   redis.error_reply('BADARG <name>: <what is wrong>')            (a caller's bad argument)
-- having written nothing; state/repo.py turns BADVALUE into baton.errors.UnreadableValue.
-- Each check returns nil when all is well, else the error's text, which the script returns
-- itself (an error raised inside a function loses its text under fakeredis's Lua).
--
-- Stored integers are accepted up to 18 digits and arguments up to 15: adding any accepted
-- amount to any accepted total can then never overflow Redis's 64-bit integers.

-- nil when v is a plain decimal integer of at most `digits` digits, else what is wrong.
local function int_problem(v, digits)
  if type(v) ~= 'string' or string.match(v, '^%-?%d+$') == nil then return 'not an integer' end
  if #string.match(v, '%d+') > digits then return 'out of range' end
  return nil
end

-- A value as an error shows it: quoted, at most 40 characters.
local function shown(v)
  return string.format('%q', string.sub(tostring(v), 1, 40))
end

-- Each key of {key, type, key, type, ...} is absent or of its type.
local function check_types(list)
  for i = 1, #list, 2 do
    local t = redis.call('TYPE', list[i])['ok']
    if t ~= 'none' and t ~= list[i + 1] then
      return 'BADVALUE ' .. list[i] .. ' (type): holds a ' .. t .. ', not a ' .. list[i + 1]
    end
  end
  return nil
end

-- Each of the hash's `fields` (that the script adds to or reads as a number) is absent or an
-- integer. The hash's type is checked first (check_types).
local function check_int_fields(key, fields)
  local got = redis.call('HMGET', key, unpack(fields))
  for i = 1, #fields do
    local v = got[i]
    if v then
      local why = int_problem(v, 18)
      if why then return 'BADVALUE ' .. key .. ' ' .. fields[i] .. ': holds ' .. shown(v) .. ', ' .. why end
    end
  end
  return nil
end

-- A string key read as an integer (a counter): absent or an integer.
local function check_int_key(key)
  local bad = check_types({key, 'string'})
  if bad then return bad end
  local v = redis.call('GET', key)
  if v then
    local why = int_problem(v, 18)
    if why then return 'BADVALUE ' .. key .. ' (value): holds ' .. shown(v) .. ', ' .. why end
  end
  return nil
end

-- Arguments that must be integers: {name, index in ARGV, name, index, ...}.
local function check_int_args(list)
  for i = 1, #list, 2 do
    local v = ARGV[list[i + 1]]
    local why = int_problem(v, 15)
    if why then return 'BADARG ' .. list[i] .. ' (ARGV[' .. list[i + 1] .. ']): ' .. shown(v) .. ' is ' .. why end
  end
  return nil
end
