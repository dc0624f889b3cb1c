-- hydraguard: every change to a subject's hash outside a decision (layout: acquire.lua).
-- KEYS: the hashes, each once.
-- ARGV[1]: JSON array: now, then 6 values per change: mode, key index, field prefix,
--   window, window id, amount:
--   0  correct a reservation (amount may be negative): applies to the window it was made
--      in while that is the current or the previous one, never resurrects it;
--   1  add usage (owed usage after an outage, merged clusters): may start the window;
--   2  release the lease whose id is in place of the window id;
--   3  set a block flag for `amount` seconds.
-- Counts never go below 0. The hash's TTL only ever grows (see ~e in acquire.lua).
local spec = cjson.decode(ARGV[1])
local now = spec[1]
local SLACK = 60

local function extend(key, expires, need)
  if need > (tonumber(expires) or 0) then
    redis.call('HSET', key, '~e', need + SLACK)
    redis.call('EXPIRE', key, math.max(math.ceil(need + SLACK - now), SLACK))
  end
end

for b = 2, #spec, 6 do
  local mode, key, f = spec[b], KEYS[spec[b + 1]], spec[b + 2]
  local w, wid, amount = spec[b + 3], spec[b + 4], spec[b + 5]
  if mode == 2 then
    local text = redis.call('HGET', key, f .. '.l')
    if text then
      local live, any = {}, false
      for lease, expiry in pairs(cjson.decode(text)) do
        if expiry > now and lease ~= wid then
          live[lease] = expiry
          any = true
        end
      end
      if any then
        redis.call('HSET', key, f .. '.l', cjson.encode(live))
      else
        redis.call('HDEL', key, f .. '.l')
      end
    end
  elseif mode == 3 then
    local values = redis.call('HMGET', key, '~e')
    redis.call('HSET', key, f .. '.f', now + amount)
    extend(key, values[1], now + amount)
  else
    local values = redis.call('HMGET', key, f .. '.i', f .. '.c', f .. '.p', '~e')
    local stored = tonumber(values[1])
    if stored == wid then
      redis.call('HSET', key, f .. '.c', math.max(0, (tonumber(values[2]) or 0) + amount))
    elseif stored == wid + 1 then
      redis.call('HSET', key, f .. '.p', math.max(0, (tonumber(values[3]) or 0) + amount))
    elseif mode == 1 and (stored == nil or stored < wid) then
      local previous = 0
      if stored == wid - 1 then previous = tonumber(values[2]) or 0 end
      redis.call('HSET', key, f .. '.i', wid, f .. '.c', math.max(0, amount), f .. '.p', previous)
      extend(key, values[4], (wid + 2) * w + 1)
    end
  end
end
return 1
