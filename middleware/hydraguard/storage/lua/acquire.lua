-- hydraguard: check-and-reserve over every limit of one decision, all or nothing, in one
-- round trip. Written by hand because no library checks several limits atomically at once.
-- KEYS: one base key per check. Window counters live at base..':'..window_id (the current
-- and previous fixed windows), concurrency leases in the sorted set at base, block flags at base.
-- ARGV: now, lease_id, lease_ttl, sliding (1/0), then one spec string
--       "window,limit,cost,shadow;..." (window 0: concurrency, -1: block flag).
-- Returns one string: "admitted|usage,wait,reset|usage,wait,reset|..." (one group per check).
local now = tonumber(ARGV[1])
local lease_id = ARGV[2]
local lease_ttl = tonumber(ARGV[3])
local sliding = ARGV[4] == '1'

local specs = {}
for window, limit, cost, shadow in string.gmatch(ARGV[5], '(-?%d+),(%d+),(%d+),(%d)') do
  specs[#specs + 1] = {tonumber(window), tonumber(limit), tonumber(cost), shadow == '1'}
end
local n = #specs

-- Read every window counter in one MGET: current and previous per window check.
local names, slot = {}, {}
for i = 1, n do
  local window = specs[i][1]
  if window > 0 then
    local id = math.floor(now / window)
    specs[i][5] = id
    slot[i] = #names + 1
    names[#names + 1] = KEYS[i] .. ':' .. string.format('%d', id)
    names[#names + 1] = KEYS[i] .. ':' .. string.format('%d', id - 1)
  end
end
local counts = {}
if #names > 0 then counts = redis.call('MGET', unpack(names)) end

local usage, waits, resets = {}, {}, {}
local admitted, all_fit = true, true
for i = 1, n do
  local window, limit, cost, shadow = specs[i][1], specs[i][2], specs[i][3], specs[i][4]
  local wait, reset, used = 0, 0, 0
  if window == -1 then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl > 0 then wait = ttl / 1000 elseif ttl == -1 then wait = 3600 end
  elseif window == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
    used = redis.call('ZCARD', KEYS[i])
    if used + cost > limit then
      local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
      wait = math.max((tonumber(first[2]) or (now + 1)) - now, 0.001)
    end
  else
    local elapsed = now - specs[i][5] * window
    local current = tonumber(counts[slot[i]] or '0') or 0
    local previous = 0
    if sliding then previous = tonumber(counts[slot[i] + 1] or '0') or 0 end
    used = previous * (window - elapsed) / window + current
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
  end
  usage[i], waits[i], resets[i] = used, wait, reset
  if wait > 0 then
    all_fit = false
    if not shadow then admitted = false end
  end
end

if admitted then
  for i = 1, n do
    local window, cost, shadow = specs[i][1], specs[i][3], specs[i][4]
    if (all_fit or not shadow) and window ~= -1 then
      if window == 0 then
        redis.call('ZADD', KEYS[i], now + lease_ttl, lease_id)
        redis.call('EXPIRE', KEYS[i], math.ceil(lease_ttl) + 1)
      else
        local key = names[slot[i]]
        -- A new counter gets its expiry once; later increments keep it.
        if redis.call('INCRBY', key, cost) == cost then redis.call('EXPIRE', key, 2 * window + 1) end
      end
      usage[i] = usage[i] + cost
    end
  end
end

local out = {admitted and '1' or '0'}
for i = 1, n do
  out[#out + 1] = string.format('%.17g,%.17g,%.17g', usage[i], waits[i], resets[i])
end
return table.concat(out, '|')
