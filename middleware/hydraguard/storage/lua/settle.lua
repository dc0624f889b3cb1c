-- hydraguard: after a response, correct token reservations and release concurrency leases.
-- KEYS: the window keys to correct, then the lease sets. ARGV: n_charges, deltas..., lease_id.
local n = tonumber(ARGV[1])
for i = 1, n do
  local delta = tonumber(ARGV[1 + i])
  -- A window that already expired weighs nothing; do not resurrect it.
  if delta ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('INCRBY', KEYS[i], delta) < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
local lease_id = ARGV[n + 2]
for i = n + 1, #KEYS do
  redis.call('ZREM', KEYS[i], lease_id)
end
return 1
