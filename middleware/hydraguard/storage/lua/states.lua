-- hydraguard: the state of every subject in KEYS, read with one MGET (layout: acquire.lua).
-- Prepended to acquire.lua and settle.lua when storage/redis.py loads them: Redis scripts
-- cannot share code any other way.
local function read_states()
  local blobs = redis.call('MGET', unpack(KEYS))
  local states = {}
  for k = 1, #KEYS do
    local blob = blobs[k]
    -- A value that is not a MessagePack map (written by something else) counts as empty
    -- and is replaced when written, rather than failing every decision until it expires.
    local ok, found = false, nil
    if blob then ok, found = pcall(cmsgpack.unpack, blob) end
    if ok and type(found) == 'table' and type(next(found) or '') == 'string' then
      states[k] = found
    else
      states[k] = {}
    end
  end
  return states
end

