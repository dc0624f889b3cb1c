-- hydraguard: check-and-reserve over every limit of one decision, all or nothing, in one
-- round trip. Written by hand because no library checks several limits atomically at once.
--
-- Layout: ONE STRING KEY per subject (storage/redis.py splits each check key at the end of
-- its hash tag: hg:{a:acct-1}:r60 -> key hg:{a:acct-1}:s, field ":r60"), holding the
-- subject's state as a MessagePack map, so a decision reads every subject with one MGET
-- and writes each one it charges with one SET, whatever its number of limits:
--   [id, current, previous]   a window limit: its current fixed window id, that window's
--                             count and the previous window's count;
--   {lease id: expiry, ...}   a concurrency limit, expired leases dropped when written;
--   expiry                    a block flag;
--   "~e": expiry              when the key expires (client time): the TTL is only set when
--                             something needs the key to live longer, else kept (KEEPTTL).
-- (Measured against this, in server time per decision: a hash per subject, whose HMGET and
-- HSET field lists are built by string concatenation, cost ~75 us against ~40; the same
-- state as JSON, cjson being slower than cmsgpack, ~50.)
-- Times are the client's `now`, as the window ids always were.
-- KEYS: the subjects' keys, each once.
-- ARGV[1]: the lease id.
-- ARGV[2]: little-endian doubles (struct, decoded in C: decoding the same as JSON took a
--   third of the script's time): first 3 per check: key index, window, shadow (1/0) (window
--   0: concurrency, -1: block flag), the same for every plan of a policy tier, so the client
--   packs them once per tier; then now, lease_ttl, the mode (sliding 1/0, plus 2 for a dry
--   run: the answer without reserving anything), the limit of each check and the cost of
--   each check.
-- ARGV[3], ARGV[4]: the struct formats of ARGV[2] and of the reply ('<ddd...'): building
--   them here cost ~7.5k of the script's ~290k instructions, the client keeps them.
-- ARGV[5 ...]: the field of each check.
-- Returns little-endian doubles: admitted (1/0), usage per check (after the reservation
-- when admitted), then the wait per check (0 when it fits). Resets and window ids are the
-- client's to compute from the same `now`, except when a counter's window is ahead of
-- `now`'s: then the window id of every check follows (0 for checks without a window).
local floor, max = math.floor, math.max
local argv = ARGV -- a local: a global's lookup cost twice a local's, per check
local lease_id = argv[1]
local spec = {struct.unpack(argv[3], argv[2])}
local n = #argv - 4
local now, lease_ttl, mode = spec[3 * n + 1], spec[3 * n + 2], spec[3 * n + 3]
local sliding, dry = mode % 2 == 1, mode >= 2
local limits, costs = 3 * n + 3, 4 * n + 3 -- the limit of check i is spec[limits + i]

local state = read_states()

-- `out` is made at its size (2n + 1 slots, each overwritten below): growing it slot by slot
-- cost ~3% of the script. A lease map is read in place and only filtered when charged.
local entries, out = {}, {1, unpack(spec, 1, 2 * n)}
local admitted, all_fit, ahead = true, true, false
local rolled = {} -- check -> the window its entry (the previous window's) rolls to if charged
for i = 1, n do
  local b = 3 * i
  local w, lim, c = spec[b - 1], spec[limits + i], spec[costs + i]
  local held = state[spec[b - 2]][argv[i + 4]]
  local used, wait, behind = 0, 0, 0
  if w > 0 then
    local wid = floor(now / w)
    local elapsed = now - wid * w
    -- The stored entry is used in place (no table per check). When it was the previous
    -- window's, it is rolled to the current one only if charged (below): an entry's window
    -- is the newest one counted in, which a clock behind it counts into (as memory's).
    local cur, prev = 0, 0
    local id = held and held[1]
    if id == wid then
      cur, prev = held[2], held[3]
      entries[i] = held
    elseif id and id > wid then
      -- The clock is behind the entry's window (replicas whose clocks disagree, a
      -- decision made after a later one): count into that window, read at its start (as
      -- MemoryStorage), instead of replacing it with an empty older one; waits count from
      -- now, and the reply says which window.
      cur, prev, wid, elapsed = held[2], held[3], id, 0
      entries[i] = held
      ahead, behind = true, id * w - now
    elseif id == wid - 1 then
      prev = held[2] -- a new window: the stored one becomes the previous one
      entries[i] = held
      rolled[i] = wid
    else
      entries[i] = {wid, 0, 0}
    end
    if not sliding then prev = 0 end
    used = prev * (w - elapsed) / w + cur
    if used + c > lim then
      -- Same algebra as storage/base.py retry_after().
      local room = lim - c
      if room < 0 then
        wait = w
      elseif not sliding then
        wait = w - elapsed
      elseif cur <= room then
        wait = max(w * (1 - (room - cur) / prev) - elapsed, 0.001)
      else
        wait = (w - elapsed) + max(w * (1 - room / cur), 0)
      end
      wait = behind + wait
    end
  elseif w == 0 then
    local first = nil
    if held then
      for _, expiry in pairs(held) do
        if expiry > now then
          used = used + 1
          if first == nil or expiry < first then first = expiry end
        end
      end
    end
    entries[i] = held or false
    if used + c > lim then wait = max((first or (now + 1)) - now, 0.001) end
  elseif held and held > now then
    wait = held - now
  end
  out[i + 1], out[n + i + 1] = used, wait
  if wait > 0 then
    all_fit = false
    if spec[b] == 0 then admitted = false end
  end
end

if admitted and not dry then
  local need = {}
  for i = 1, n do
    local b = 3 * i
    local w, c = spec[b - 1], spec[costs + i]
    if w >= 0 and (all_fit or spec[b] == 0) then
      local k, entry, until_ = spec[b - 2], entries[i], nil
      if w > 0 then
        local to = rolled[i]
        if to then entry[1], entry[2], entry[3] = to, 0, entry[2] end
        entry[2] = entry[2] + c
        -- A window's count matters until its next window ends.
        until_ = max(now, entry[1] * w) + 2 * w + 1
      else
        if entry then -- expired leases are dropped when written
          for lease, expiry in pairs(entry) do
            if expiry <= now then entry[lease] = nil end
          end
        else
          entry = {}
        end
        entry[lease_id] = now + lease_ttl
        until_ = now + lease_ttl + 1
      end
      state[k][argv[i + 4]] = entry
      if until_ > (need[k] or 0) then need[k] = until_ end
      out[i + 1] = out[i + 1] + c
    end
  end
  for k, until_ in pairs(need) do write_state(k, state[k], until_, now) end
else
  out[1] = 0
end
if ahead then
  -- Rare: the window ids follow the usual reply (the client computes them otherwise).
  for i = 1, n do
    local entry = entries[i]
    out[2 * n + 1 + i] = spec[3 * i - 1] > 0 and (rolled[i] or entry[1]) or 0
  end
  return struct.pack('<' .. string.rep('d', 3 * n + 1), unpack(out))
end
return struct.pack(argv[4], unpack(out))
