-- hydraguard: every change to a subject's state outside a decision (layout: acquire.lua).
-- KEYS: the subjects' keys, each once.
-- ARGV[1]: JSON array: now, then 6 values per change: mode, key index, field, window,
--   window id, amount:
--   0  correct a reservation (amount may be negative): applies to the window it was made
--      in while that is the current or the previous one, never resurrects it;
--   1  add usage (owed usage after an outage, merged clusters): may start the window;
--   2  release the lease whose id is in place of the window id;
--   3  set a block flag for `amount` seconds;
--   4  remove the field (a block flag lifted; counted when it was in force at now);
--   5  remove every field whose name starts with `field` (an admin reset).
-- Counts never go below 0. The key's TTL only ever grows (see ~e in acquire.lua); a key
-- left with nothing but its expiry mark is deleted.
-- Returns how many fields modes 4 (flags in force) and 5 removed.
local spec = cjson.decode(ARGV[1])
local now = spec[1]

local state = read_states()
local need, dirty, removed = {}, {}, 0

local function keep_until(k, until_)
  if until_ > (need[k] or 0) then need[k] = until_ end
end

for b = 2, #spec, 6 do
  local mode, k, f = spec[b], spec[b + 1], spec[b + 2]
  local w, wid, amount = spec[b + 3], spec[b + 4], spec[b + 5]
  local s = state[k]
  local held = s[f]
  if mode == 2 then
    if held then
      local live, any = {}, false
      for lease, expiry in pairs(held) do
        if expiry > now and lease ~= wid then
          live[lease] = expiry
          any = true
        end
      end
      if any then s[f] = live else s[f] = nil end
      dirty[k] = true
    end
  elseif mode == 3 then
    s[f] = now + amount
    dirty[k] = true
    keep_until(k, now + amount)
  elseif mode == 4 then
    if held then
      s[f] = nil
      dirty[k] = true
      if type(held) == 'number' and held > now then removed = removed + 1 end
    end
  elseif mode == 5 then
    local doomed = {}
    for name in pairs(s) do
      if name ~= '~e' and string.sub(name, 1, #f) == f then doomed[#doomed + 1] = name end
    end
    for _, name in ipairs(doomed) do s[name] = nil end
    if #doomed > 0 then dirty[k] = true end
    removed = removed + #doomed
  elseif held and held[1] == wid then
    held[2] = math.max(0, held[2] + amount)
    dirty[k] = true
  elseif held and held[1] == wid + 1 then
    held[3] = math.max(0, held[3] + amount)
    dirty[k] = true
  elseif mode == 1 and (held == nil or held[1] < wid) then
    local previous = 0
    if held and held[1] == wid - 1 then previous = held[2] end
    s[f] = {wid, math.max(0, amount), previous}
    dirty[k] = true
    keep_until(k, (wid + 2) * w + 1)
  end
end

for k in pairs(dirty) do
  local s = state[k]
  if next(s) == nil or (next(s) == '~e' and next(s, '~e') == nil) then
    redis.call('DEL', KEYS[k])
  else
    write_state(k, s, need[k] or 0, now)
  end
end
return removed
