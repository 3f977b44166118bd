-- Take `cost` tokens from every bucket in KEYS, all or nothing: the venues' request budgets,
-- shared by every worker of every colour (state/ratelimit.py).
-- KEYS[i] bucket hash: tokens, updated_ms, capacity, refill_per_s (TTL: until it is full again)
-- ARGV[1] now_ms, ARGV[2] cost, ARGV[3] max_wait_ms,
-- then per bucket i: ARGV[2+2i] capacity, ARGV[3+2i] refill_per_s
-- Returns {granted, wait_ms, index of the bucket that sets the wait (0: none), 'i,j' indices of
-- the corrupt buckets}:
--   {1, w, ..}     taken from every bucket; the caller sends after waiting w ms (0: at once).
--                  A grant with w > 0 is a reservation: the buckets go into debt (tokens < 0),
--                  so that later callers queue behind it instead of racing for the refill.
--   {0, w, i, ..}  nothing taken: bucket i needs w ms, more than max_wait_ms (or than one full
--                  refill of a bucket, the longest reservation); w = -1 when the cost exceeds
--                  bucket i's capacity (never grantable).
--
-- Time is the caller's now_ms, as in every script here (and the lease's expiry, which already
-- needs the workers' clocks to agree): a script that takes time from its arguments is
-- deterministic, and tests drive it with an injected clock. Redis `TIME` would give one clock
-- to all callers; instead, skew is made harmless: a bucket never refills for time before its
-- `updated_ms` (a caller whose clock lags gets no refill until it catches up: conservative),
-- and an `updated_ms` more than a minute ahead of the caller is treated as corrupt.
--
-- A missing hash is a full bucket (the TTL drops a bucket exactly when it would be full). A hash
-- that cannot be read (a wrong type, or a tokens/updated_ms that is not a finite number) is
-- reset to full, and reported in the fourth element so that the caller journals it: the venue
-- still enforces its own limit, and a garbage counter must not stop trading.
local now = tonumber(ARGV[1])
local cost = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local SKEW_MS = 60000

local function finite(x)
  return x ~= nil and x == x and x ~= math.huge and x ~= -math.huge
end

local n = #KEYS
-- The arguments are checked before the first write (a corrupt bucket's reset): a call that
-- would fail half-way must not have reset buckets first (_check.lua's rule).
if #ARGV ~= 3 + 2 * n or not (finite(now) and finite(cost) and finite(max_wait)) then
  return redis.error_reply('BADARG ARGV: now_ms, cost, max_wait_ms and a capacity and rate per bucket')
end
for i = 1, n do
  local c, r = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if not (finite(c) and finite(r) and c > 0 and r > 0) then
    return redis.error_reply('BADARG bucket ' .. i .. ': capacity and refill_per_s must be positive')
  end
end
local level, updated, cap, rate = {}, {}, {}, {}
local corrupt = {}
local wait, blocking = 0, 0

for i = 1, n do
  cap[i] = tonumber(ARGV[2 + 2 * i])
  rate[i] = tonumber(ARGV[3 + 2 * i])
  local tokens, upd
  local ok = true
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local r = redis.pcall('HMGET', KEYS[i], 'tokens', 'updated_ms')
    if type(r) == 'table' and r.err == nil then
      tokens, upd = tonumber(r[1]), tonumber(r[2])
      ok = finite(tokens) and finite(upd) and upd <= now + SKEW_MS
    else
      ok = false
    end
    if not ok then
      corrupt[#corrupt + 1] = tostring(i)
      redis.call('DEL', KEYS[i])
    end
  end
  if tokens == nil or not ok then
    tokens, upd = cap[i], now
  end
  if now > upd then
    tokens = tokens + (now - upd) * rate[i] / 1000
    upd = now
  end
  -- Into [-capacity, capacity]: only a bucket whose capacity was scaled down is outside.
  if tokens > cap[i] then tokens = cap[i] end
  if tokens < -cap[i] then tokens = -cap[i] end
  level[i], updated[i] = tokens, upd

  -- The wait before this bucket holds `cost`; -1: never (the cost exceeds its capacity).
  local w
  if cost > cap[i] then
    w = -1
  elseif tokens >= cost then
    w = 0
  else
    w = math.ceil((cost - tokens) * 1000 / rate[i])
  end
  if w < 0 then
    if wait >= 0 then wait, blocking = -1, i end
  elseif wait >= 0 and w > wait then
    wait, blocking = w, i
  end
  -- A reservation may not wait longer than one full refill: this bounds every debt by one
  -- capacity (tokens >= -capacity), so that a deeper value can only be a scaled-down bucket.
  local refill_ms = math.ceil(cap[i] * 1000 / rate[i])
  if refill_ms < max_wait then max_wait = refill_ms end
end

local granted = wait >= 0 and wait <= max_wait
local is_corrupt = {}
for _, i in ipairs(corrupt) do is_corrupt[tonumber(i)] = true end
for i = 1, n do
  if granted then
    level[i] = level[i] - cost
  end
  if granted or is_corrupt[i] then
    local full_in_ms = math.ceil((cap[i] - level[i]) * 1000 / rate[i]) + 1000
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.4f', level[i]),
               'updated_ms', string.format('%.0f', updated[i]),
               'capacity', string.format('%.4f', cap[i]),
               'refill_per_s', string.format('%.4f', rate[i]))
    redis.call('PEXPIRE', KEYS[i], string.format('%.0f', full_in_ms))
  end
end
return {granted and 1 or 0, wait, blocking, table.concat(corrupt, ',')}
