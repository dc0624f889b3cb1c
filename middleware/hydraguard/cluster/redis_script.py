"""The Redis cluster index's server-side script: every operation runs atomically.

One script, dispatched on ARGV[2], mirrors ``index.py`` step by step so several
replicas agree on account -> cluster. Kept in a Python string so it ships with
the package without a package-data entry. Keys (all under one hash tag, so one
Redis Cluster slot; KEYS[1] names it for routing):

    par  hash  account -> parent        sz   hash  root -> size (absent: 1)
    ord  hash  account -> arrival no.   m:R  set   members of root R (2+ only)
    v:F  zset  holders of value F=signal\\31value, scored by arrival
    sat  set   saturated values         first hash strong value -> first holder
    seen:A hash value -> first seen     ev   hash  pair -> live weak evidence
    edge hash  pair -> when linked      man  hash  pair -> "ts\\31reason"
    adj:A set  A's edge partners        nl:A set   accounts A never links with
    roots set  roots of 2+              cids hash  cluster id -> root
    links hash signal -> links made      last zset account -> last seen (retention on)
    rel  string values released at the per-account cap (max_values_per_account)
"""

from __future__ import annotations

LUA = r"""
local B, OP = ARGV[1], ARGV[2]
local SEP = '\31'
local PAR, SZ, ORD, SEQ = B..'par', B..'sz', B..'ord', B..'seq'
local SAT, FIRST, EV, EDGE, MAN = B..'sat', B..'first', B..'ev', B..'edge', B..'man'
local ROOTS, CIDS, LINKS, NLANY = B..'roots', B..'cids', B..'links', B..'nlany'
local LAST, REL = B..'last', B..'rel'
local EPS = 1e-9
local merges = {}

local function cid(root) return 'c-' .. string.sub(redis.sha1hex(root), 1, 16) end
local function ord(a) return tonumber(redis.call('HGET', ORD, a)) end
local function size(r) return tonumber(redis.call('HGET', SZ, r)) or 1 end
local function pair(a, b) if a < b then return a..SEP..b end return b..SEP..a end
local function signal_of(field) return string.match(field, '^([^\31]*)') end

local function register(a)
  if redis.call('HEXISTS', ORD, a) == 0 then redis.call('HSET', ORD, a, redis.call('INCR', SEQ)) end
end

local function find(x)
  local root, p = x, redis.call('HGET', PAR, x)
  while p do root = p; p = redis.call('HGET', PAR, root) end
  while x ~= root do
    local nxt = redis.call('HGET', PAR, x)
    if nxt ~= root then redis.call('HSET', PAR, x, root) end
    x = nxt
  end
  return root
end

local function members(r)
  if size(r) > 1 then return redis.call('SMEMBERS', B..'m:'..r) end
  return {r}
end

local function add_all(key, items)
  for i = 1, #items, 1000 do
    redis.call('SADD', key, unpack(items, i, math.min(i + 999, #items)))
  end
end

local function allowed(ra, rb)
  local small, other = ra, rb
  if size(ra) > size(rb) then small, other = rb, ra end
  for _, x in ipairs(members(small)) do
    for _, y in ipairs(redis.call('SMEMBERS', B..'nl:'..x)) do
      if find(y) == other then return false end
    end
  end
  return true
end

local function union(a, b)
  local keep, gone = find(a), find(b)
  if keep == gone then return nil end
  if redis.call('EXISTS', NLANY) == 1 and not allowed(keep, gone) then return nil end
  local sk, sg = size(keep), size(gone)
  if sk < sg or (sk == sg and ord(gone) < ord(keep)) then
    keep, gone, sk, sg = gone, keep, sg, sk
  end
  local moved = members(gone)  -- before its size goes: members() reads it
  redis.call('HSET', PAR, gone, keep)
  redis.call('HSET', SZ, keep, sk + sg)
  redis.call('HDEL', SZ, gone)
  local mk = B..'m:'..keep
  if sk == 1 then redis.call('SADD', mk, keep) end
  add_all(mk, moved)
  redis.call('DEL', B..'m:'..gone)
  redis.call('SREM', ROOTS, gone)
  redis.call('SADD', ROOTS, keep)
  redis.call('HDEL', CIDS, cid(gone))
  redis.call('HSET', CIDS, cid(keep), keep)
  return {gone, keep}
end

local function join(a, b)
  local r = union(a, b)
  if r then table.insert(merges, cid(r[1])); table.insert(merges, cid(r[2])) end
end

local function add_edge(pk, a, b, ts)
  redis.call('HSET', EDGE, pk, ts)
  redis.call('SADD', B..'adj:'..a, b)
  redis.call('SADD', B..'adj:'..b, a)
  local counted = {}
  for _, f in ipairs(redis.call('HKEYS', B..'seen:'..a)) do
    local sig = signal_of(f)
    if not counted[sig] and redis.call('HEXISTS', B..'seen:'..b, f) == 1 then
      counted[sig] = true
      redis.call('HINCRBY', LINKS, sig, 1)
    end
  end
  join(a, b)
end

-- a value's weight off a pair's pending evidence; nothing left, the entry goes
local function withdraw(pk, weight)
  local left = redis.call('HGET', EV, pk)
  if left then
    left = tonumber(left) - weight
    if left <= EPS then redis.call('HDEL', EV, pk) else redis.call('HSET', EV, pk, left) end
  end
end

local function saturate(field, vkey, weight, strong)
  redis.call('SADD', SAT, field)
  if strong then return end  -- its holders stay: they are the links a split replays
  local held = redis.call('ZRANGE', vkey, 0, -1)
  for i = 1, #held do
    for j = i + 1, #held do withdraw(pair(held[i], held[j]), weight) end
  end
  redis.call('DEL', vkey)
end

-- The account lets go of value f (release.py): off its holders, withdrawing weight from
-- its evidence with each co-holder (0: a strong value, which gave none; math.huge: all of
-- it, the account is forgotten). Links already made stay. The caller edits seen:A.
local function release(a, f, weight)
  local vkey = B..'v:'..f
  if redis.call('ZREM', vkey, a) == 0 then return end  -- a saturated weak value, holders gone
  local left = redis.call('ZRANGE', vkey, 0, -1)
  if weight > 0 then
    for _, b in ipairs(left) do withdraw(pair(a, b), weight) end
  end
  if #left == 0 then
    redis.call('HDEL', FIRST, f)
    redis.call('SREM', SAT, f)
  elseif redis.call('HGET', FIRST, f) == a then
    redis.call('HSET', FIRST, f, left[1])
  end
end

-- a is about to record a new value of sig: holding cap of them, its oldest goes (first
-- seen earliest, ties by field, as make_room in release.py), so that it holds cap - 1.
-- HLEN first: an account holding fewer values than the cap in all signals together pays
-- no scan. One pass finds the oldest; another only if the cap was lowered since.
local function make_room(a, sig, cap, weight)
  local seen = B..'seen:'..a
  if redis.call('HLEN', seen) < cap then return end
  local prefix = sig..SEP
  while true do
    local row, held, oldest, first = redis.call('HGETALL', seen), 0, nil, nil
    for i = 1, #row, 2 do
      local f = row[i]
      if string.find(f, prefix, 1, true) == 1 then
        held = held + 1
        local t = tonumber(row[i + 1])
        if not oldest or t < first or (t == first and f < oldest) then oldest, first = f, t end
      end
    end
    if held < cap then return end
    release(a, oldest, weight)
    redis.call('HDEL', seen, oldest)
    redis.call('INCR', REL)
  end
end

local function observe_value(a, sig, value, weight, fanout, strong, cap, ts, thr)
  local field = sig..SEP..value
  local vkey = B..'v:'..field
  if redis.call('SISMEMBER', SAT, field) == 1 or redis.call('ZSCORE', vkey, a) then return end
  local n = redis.call('ZCARD', vkey)
  if n > 0 and n >= fanout then return saturate(field, vkey, weight, strong) end
  make_room(a, sig, cap, strong and 0 or weight)
  redis.call('HSET', B..'seen:'..a, field, ts)
  if n == 0 then
    if strong then redis.call('HSET', FIRST, field, a) end
  elseif strong then
    redis.call('HINCRBY', LINKS, sig, 1)
    join(a, redis.call('HGET', FIRST, field))
  else
    for _, b in ipairs(redis.call('ZRANGE', vkey, 0, -1)) do
      local pk = pair(a, b)
      local total = tonumber(redis.call('HINCRBYFLOAT', EV, pk, weight))
      if total >= thr and redis.call('HEXISTS', EDGE, pk) == 0 then add_edge(pk, a, b, ts) end
    end
  end
  redis.call('ZADD', vkey, ord(a), a)
end

local function by_ord(list)
  local o = {}
  for _, x in ipairs(list) do o[x] = ord(x) end
  table.sort(list, function(p, q) return o[p] < o[q] end)
  return o
end

local function split(root, strong)
  local old, group = cid(root), members(root)
  local in_group = {}
  for _, x in ipairs(group) do
    in_group[x] = true
    redis.call('HDEL', PAR, x)
    redis.call('HDEL', SZ, x)
  end
  redis.call('DEL', B..'m:'..root)
  redis.call('SREM', ROOTS, root)
  redis.call('HDEL', CIDS, old)
  local o = by_ord(group)
  -- strong values first, each a hyperedge over its holders in the group
  local fields, listed = {}, {}
  for _, x in ipairs(group) do
    for _, f in ipairs(redis.call('HKEYS', B..'seen:'..x)) do
      if strong[signal_of(f)] and not listed[f] then listed[f] = true; table.insert(fields, f) end
    end
  end
  table.sort(fields)
  for _, f in ipairs(fields) do
    local first = nil
    for _, y in ipairs(redis.call('ZRANGE', B..'v:'..f, 0, -1)) do
      if in_group[y] then if first then union(first, y) else first = y end end
    end
  end
  -- then pair edges (weak evidence and operator links) in the order they formed
  local edges = {}
  for _, x in ipairs(group) do
    for _, y in ipairs(redis.call('SMEMBERS', B..'adj:'..x)) do
      if in_group[y] and o[x] < o[y] then
        table.insert(edges, {tonumber(redis.call('HGET', EDGE, pair(x, y))), o[x], o[y], x, y})
      end
    end
  end
  table.sort(edges, function(p, q)
    if p[1] ~= q[1] then return p[1] < q[1] end
    if p[2] ~= q[2] then return p[2] < q[2] end
    return p[3] < q[3]
  end)
  for _, e in ipairs(edges) do union(e[4], e[5]) end
  -- the part holding the old root keeps it, so its cluster id survives
  local nr = find(root)
  if nr ~= root then
    local moved = redis.call('SMEMBERS', B..'m:'..nr)
    for _, x in ipairs(moved) do redis.call('HSET', PAR, x, root) end
    redis.call('HDEL', PAR, root)
    redis.call('HSET', SZ, root, #moved)
    redis.call('HDEL', SZ, nr)
    redis.call('RENAME', B..'m:'..nr, B..'m:'..root)
    redis.call('SREM', ROOTS, nr)
    redis.call('SADD', ROOTS, root)
    redis.call('HDEL', CIDS, cid(nr))
    redis.call('HSET', CIDS, old, root)
  end
  local roots, done = {}, {}
  for _, x in ipairs(group) do
    local r = find(x)
    if not done[r] then done[r] = true; table.insert(roots, r) end
  end
  table.sort(roots, function(p, q) return o[p] < o[q] end)
  local out = {old}
  for _, r in ipairs(roots) do table.insert(out, cid(r)) end
  return out
end

local function forbid(a, b)
  redis.call('SADD', B..'nl:'..a, b)
  redis.call('SADD', B..'nl:'..b, a)
  redis.call('SET', NLANY, '1')
end

-- retention (see retention.py): never linked to anyone, so nothing is lost but the account
local function forgettable(a)
  return not redis.call('HGET', PAR, a) and size(a) == 1
    and redis.call('EXISTS', B..'adj:'..a) == 0 and redis.call('EXISTS', B..'nl:'..a) == 0
end

local function forget(a)
  local seen = B..'seen:'..a
  for _, f in ipairs(redis.call('HKEYS', seen)) do release(a, f, math.huge) end
  redis.call('DEL', seen)
  redis.call('HDEL', ORD, a)
end

local function strong_set(from)
  local s = {}
  for i = from, #ARGV do s[ARGV[i]] = true end
  return s
end

if OP == 'observe' then
  local a, ts, thr = ARGV[3], ARGV[4], tonumber(ARGV[5])
  register(a)
  if ARGV[6] == '1' then redis.call('ZADD', LAST, ts, a) end
  for i = 7, #ARGV, 6 do
    observe_value(a, ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
                  ARGV[i + 4] == '1', tonumber(ARGV[i + 5]), ts, thr)
  end
  local root = find(a)
  return {cid(root), merges, size(root)}
elseif OP == 'sweep' then
  -- at most ARGV[4] accounts last seen before ARGV[3]; a linked one only leaves the queue
  local gone = {}
  local idle = redis.call('ZRANGEBYSCORE', LAST, '-inf', '('..ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
  for _, a in ipairs(idle) do
    redis.call('ZREM', LAST, a)
    if forgettable(a) then forget(a); table.insert(gone, a) end
  end
  return gone
elseif OP == 'find' then
  if redis.call('HEXISTS', ORD, ARGV[3]) == 0 then return cid(ARGV[3]) end
  return cid(find(ARGV[3]))
elseif OP == 'link' then
  local a, b, reason, ts = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
  register(a); register(b)
  if a ~= b then
    local side_b = {}
    for _, y in ipairs(members(find(b))) do side_b[y] = true end
    for _, x in ipairs(members(find(a))) do
      for _, y in ipairs(redis.call('SMEMBERS', B..'nl:'..x)) do
        if side_b[y] then redis.call('SREM', B..'nl:'..x, y); redis.call('SREM', B..'nl:'..y, x) end
      end
    end
    local pk = pair(a, b)
    redis.call('HSET', MAN, pk, ts..SEP..reason)
    if redis.call('HEXISTS', EDGE, pk) == 0 then
      redis.call('HSET', EDGE, pk, ts)
      redis.call('SADD', B..'adj:'..a, b)
      redis.call('SADD', B..'adj:'..b, a)
    end
    redis.call('HINCRBY', LINKS, 'manual', 1)
    join(a, b)
  end
  return {cid(find(a)), merges}
elseif OP == 'unlink' then
  local a, b = ARGV[3], ARGV[4]
  register(a); register(b)
  local split_out = {}
  if a ~= b then
    redis.call('HDEL', MAN, pair(a, b))
    forbid(a, b)
    local r = find(a)
    if r == find(b) then split_out = split(r, strong_set(5)) end
  end
  return {cid(find(a)), cid(find(b)), split_out}
elseif OP == 'detach' then
  local a = ARGV[3]
  register(a)
  local r = find(a)
  local group = members(r)
  local split_out = {}
  for _, m in ipairs(group) do
    if m ~= a then redis.call('HDEL', MAN, pair(a, m)); forbid(a, m) end
  end
  if #group > 1 then split_out = split(r, strong_set(4)) end
  return {cid(find(a)), split_out}
elseif OP == 'explain' then
  local root = redis.call('HGET', CIDS, ARGV[3])
  if not root then return {} end
  local group = members(root)
  local in_group, seen, edges, manual, sat = {}, {}, {}, {}, {}
  for _, x in ipairs(group) do in_group[x] = true end
  for _, x in ipairs(group) do
    local row = redis.call('HGETALL', B..'seen:'..x)
    table.insert(seen, row)
    for i = 1, #row, 2 do
      if redis.call('SISMEMBER', SAT, row[i]) == 1 then table.insert(sat, row[i]) end
    end
    for _, y in ipairs(redis.call('SMEMBERS', B..'adj:'..x)) do
      if in_group[y] and x < y then
        local pk = pair(x, y)
        table.insert(edges, {redis.call('HGET', EDGE, pk), x, y})
        local m = redis.call('HGET', MAN, pk)
        if m then table.insert(manual, {x, y, m}) end
      end
    end
  end
  return {group, seen, edges, manual, sat}
elseif OP == 'stats' then
  local sizes = {}
  for _, r in ipairs(redis.call('SMEMBERS', ROOTS)) do table.insert(sizes, size(r)) end
  return {redis.call('HLEN', ORD), sizes, redis.call('HGETALL', LINKS), redis.call('SCARD', SAT),
          tonumber(redis.call('GET', REL)) or 0}
end
return redis.error_reply('unknown operation ' .. tostring(OP))
"""
