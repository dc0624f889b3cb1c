-- hydraguard: reading and writing the subjects' states (layout: acquire.lua). Prepended to
-- acquire.lua and settle.lua when storage/redis.py loads them: Redis scripts cannot share
-- code any other way.
local SLACK = 60 -- seconds added when the TTL is extended, so it is not extended every call

-- The state of every subject in KEYS, read with one MGET.
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


-- Write subject k's state. Its TTL only ever lengthens (the key may hold longer windows,
-- leases or a flag): to `until_` plus SLACK when that is later than its expiry mark `~e`,
-- else it is kept (KEEPTTL). A state without a mark gets one.
local function write_state(k, s, until_, now)
  local expires = tonumber(s['~e']) or 0
  if until_ > expires or expires == 0 then
    local mark = math.max(until_, now) + SLACK
    s['~e'] = mark
    -- The milliseconds as an integer's text: redis.call turns a Lua number into text with
    -- '%.17g', ~1k instructions more a key (count_redis_script_instructions.py).
    local ms = string.format('%d', math.ceil((mark - now) * 1000))
    redis.call('SET', KEYS[k], cmsgpack.pack(s), 'PX', ms)
  else
    redis.call('SET', KEYS[k], cmsgpack.pack(s), 'KEEPTTL')
  end
end
