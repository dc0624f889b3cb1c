-- hydraguard: check-and-reserve over every limit of one decision, all or nothing.
-- Written by hand because no library checks several limits atomically in one round trip.
-- KEYS: per window check its current and previous fixed-window keys; per concurrency check its lease set.
-- ARGV: now, lease_id, lease_ttl, sliding, n, then per check: window, limit, cost, shadow, window_id.
local now = tonumber(ARGV[1])
local lease_id = ARGV[2]
local lease_ttl = tonumber(ARGV[3])
local sliding = ARGV[4] == '1'
local n = tonumber(ARGV[5])

local usage, waits, resets, fits, keyi = {}, {}, {}, {}, {}
local admitted, all_fit = true, true
local k = 1
for i = 1, n do
  local a = 5 + (i - 1) * 5
  local window, limit, cost, shadow = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
  keyi[i] = k
  local wait, reset = 0, 0
  if window == -1 then
    -- A block flag: refuses while the key exists.
    usage[i] = 0
    local ttl = redis.call('PTTL', KEYS[k])
    if ttl > 0 then wait = ttl / 1000 elseif ttl == -1 then wait = 3600 end
    k = k + 1
  elseif window == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', now)
    local held = redis.call('ZCARD', KEYS[k])
    usage[i] = held
    if held + cost > limit then
      local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
      wait = math.max((tonumber(first[2]) or (now + 1)) - now, 0.001)
    end
    k = k + 1
  else
    local window_id = tonumber(ARGV[a + 5])
    local elapsed = now - window_id * window
    local current = tonumber(redis.call('GET', KEYS[k]) or '0')
    local previous = 0
    if sliding then previous = tonumber(redis.call('GET', KEYS[k + 1]) or '0') end
    local used = current
    if sliding then used = previous * (window - elapsed) / window + current end
    usage[i] = used
    reset = window - elapsed
    if used + cost > limit then
      -- Same algebra as storage/base.py retry_after().
      local room = limit - cost
      if room < 0 then
        wait = window
      elseif not sliding then
        wait = window - elapsed
      elseif current <= room then
        wait = math.max(window * (1 - (room - current) / previous) - elapsed, 0.001)
      else
        wait = (window - elapsed) + math.max(window * (1 - room / current), 0)
      end
    end
    k = k + 2
  end
  waits[i], resets[i] = wait, reset
  fits[i] = wait == 0
  if not fits[i] then
    all_fit = false
    if not shadow then admitted = false end
  end
end

if admitted then
  for i = 1, n do
    local a = 5 + (i - 1) * 5
    local window, cost, shadow = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 3]), ARGV[a + 4] == '1'
    if all_fit or not shadow then
      local key = KEYS[keyi[i]]
      if window == -1 then
        -- flags are never charged
      elseif window == 0 then
        redis.call('ZADD', key, now + lease_ttl, lease_id)
        redis.call('EXPIRE', key, math.ceil(lease_ttl) + 1)
      else
        redis.call('INCRBY', key, cost)
        redis.call('EXPIRE', key, 2 * window + 1)
      end
      usage[i] = usage[i] + cost
    end
  end
end

local out = {admitted and 1 or 0}
for i = 1, n do
  out[#out + 1] = tostring(usage[i])
  out[#out + 1] = tostring(waits[i])
  out[#out + 1] = tostring(resets[i])
end
return out
