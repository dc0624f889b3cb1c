-- hydraguard: check-and-reserve over every limit of one decision, all or nothing, in one
-- round trip. Written by hand because no library checks several limits atomically at once.
--
-- Layout: ONE HASH per subject (storage/redis.py splits each check key at the end of its
-- hash tag: hg:{a:acct-1}:r60 -> hash hg:{a:acct-1}, field prefix ":r60"), so a decision
-- costs one HMGET and at most one HSET per subject whatever its number of limits:
--   F.i, F.c, F.p   a window limit: its current fixed window id, that window's count and
--                   the previous window's count (3 fields a limit, nothing to clean up);
--   F.l             a concurrency limit: JSON {lease id: expiry}, expired leases dropped
--                   whenever it is written;
--   F.f             a block flag: its expiry;
--   ~e              when the hash expires (the EXPIRE last set, client time), so the TTL is
--                   only touched when something needs the hash to live longer.
-- Times are the client's `now` (as the window ids always were).
-- KEYS: the hashes, each once.
-- ARGV[1]: one JSON array (cjson decodes it in C; parsing text in Lua cost more than the
--   rest of the script): now, lease_id, lease_ttl, sliding, then 6 values per check:
--   window, limit, cost, shadow, key index, field prefix (window 0: concurrency, -1: flag).
-- Returns an array: admitted (1/0), usage per check (after the reservation when admitted),
-- then the wait per check (0 when it fits); integers as integers, fractions as text. Resets and window ids are the
-- client's to compute from the same `now`.
local spec = cjson.decode(ARGV[1])
local now, lease_id, lease_ttl, sliding = spec[1], spec[2], spec[3], spec[4]
local n = (#spec - 4) / 6
local SLACK = 60 -- seconds added when the TTL is extended, so it is not extended every call

-- Checks grouped by hash, in first-seen order.
local groups, order = {}, {}
for i = 1, n do
  local k = spec[6 * i + 3]
  local group = groups[k]
  if group == nil then
    group = {}
    groups[k] = group
    order[#order + 1] = k
  end
  group[#group + 1] = i
end

-- One HMGET per hash: ~e, then each check's fields.
local id, current, previous, rolled, leases = {}, {}, {}, {}, {}
local expires, out = {}, {1}
local admitted, all_fit = true, true
for g = 1, #order do
  local group = groups[order[g]]
  local names, at = {'~e'}, {}
  for j = 1, #group do
    local i = group[j]
    local w, f = spec[6 * i - 1], spec[6 * i + 4]
    at[j] = #names + 1
    if w > 0 then
      names[#names + 1] = f .. '.i'
      names[#names + 1] = f .. '.c'
      names[#names + 1] = f .. '.p'
    elseif w == 0 then
      names[#names + 1] = f .. '.l'
    else
      names[#names + 1] = f .. '.f'
    end
  end
  local values = redis.call('HMGET', KEYS[order[g]], unpack(names))
  expires[g] = tonumber(values[1]) or 0
  for j = 1, #group do
    local i = group[j]
    local b, v = 6 * i - 1, at[j]
    local w, lim, c = spec[b], spec[b + 1], spec[b + 2]
    local used, wait = 0, 0
    if w > 0 then
      local wid = math.floor(now / w)
      local stored = tonumber(values[v])
      local cur, prev = 0, 0
      if stored == wid then
        cur, prev = tonumber(values[v + 1]) or 0, tonumber(values[v + 2]) or 0
      else
        -- A new window: the stored one becomes the previous one, or nothing if older.
        rolled[i] = true
        if stored == wid - 1 then prev = tonumber(values[v + 1]) or 0 end
      end
      id[i], current[i], previous[i] = wid, cur, prev
      if not sliding then prev = 0 end
      local elapsed = now - wid * w
      used = prev * (w - elapsed) / w + cur
      if used + c > lim then
        -- Same algebra as storage/base.py retry_after().
        local room = lim - c
        if room < 0 then
          wait = w
        elseif not sliding then
          wait = w - elapsed
        elseif cur <= room then
          wait = math.max(w * (1 - (room - cur) / prev) - elapsed, 0.001)
        else
          wait = (w - elapsed) + math.max(w * (1 - room / cur), 0)
        end
      end
    elseif w == 0 then
      local live, first = {}, nil
      if values[v] then
        for lease, expiry in pairs(cjson.decode(values[v])) do
          if expiry > now then
            live[lease] = expiry
            used = used + 1
            if first == nil or expiry < first then first = expiry end
          end
        end
      end
      leases[i] = live
      if used + c > lim then wait = math.max((first or (now + 1)) - now, 0.001) end
    else
      local expiry = tonumber(values[v])
      if expiry and expiry > now then wait = expiry - now end
    end
    out[i + 1], out[n + i + 1] = used, wait
    if wait > 0 then
      all_fit = false
      if not spec[b + 3] then admitted = false end
    end
  end
end

if admitted then
  for g = 1, #order do
    local group = groups[order[g]]
    local writes, need = {}, 0
    for j = 1, #group do
      local i = group[j]
      local b = 6 * i - 1
      local w, c = spec[b], spec[b + 2]
      if w >= 0 and (all_fit or not spec[b + 3]) then
        local f = spec[b + 5]
        if w > 0 then
          writes[#writes + 1] = f .. '.c'
          writes[#writes + 1] = current[i] + c
          if rolled[i] then
            writes[#writes + 1] = f .. '.i'
            writes[#writes + 1] = id[i]
            writes[#writes + 1] = f .. '.p'
            writes[#writes + 1] = previous[i]
            -- A window's count matters until its next window ends.
            need = math.max(need, now + 2 * w + 1)
          end
        else
          leases[i][lease_id] = now + lease_ttl
          writes[#writes + 1] = f .. '.l'
          writes[#writes + 1] = cjson.encode(leases[i])
          need = math.max(need, now + lease_ttl + 1)
        end
        out[i + 1] = out[i + 1] + c
      end
    end
    if #writes > 0 then
      local k = KEYS[order[g]]
      if need > expires[g] then
        -- Only ever lengthen: the hash may hold longer windows, leases or a flag.
        writes[#writes + 1] = '~e'
        writes[#writes + 1] = need + SLACK
        redis.call('HSET', k, unpack(writes))
        redis.call('EXPIRE', k, math.ceil(need + SLACK - now))
      else
        redis.call('HSET', k, unpack(writes))
      end
    end
  end
else
  out[1] = 0
end
-- An array reply: Redis turns numbers into integers, so only fractions go as text.
for i = 2, 2 * n + 1 do
  local x = out[i]
  if x ~= math.floor(x) then out[i] = string.format('%.17g', x) end
end
return out
