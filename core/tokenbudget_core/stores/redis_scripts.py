"""The Lua sources behind :class:`~tokenbudget_core.stores.redis.RedisStore`.

Each ledger operation is one script, run with ``EVALSHA``: Redis runs a script atomically,
so one round trip does the whole operation (expire stale leases, the idempotency check,
every limit check, every increment). All the keys one script touches are of one day and
share one hash tag, so they sit in one cluster slot.

Keys (``KEYS``), all of one day::

    bal     hash   "<scope>|<metric>|spent" and "<scope>|<metric>|reserved" -> int
    req     hash   "<request id>" -> reserved | committed | released | expired
    held    hash   "<request id>" -> "<bal field> <amount> ..." of a live reservation
    leases  zset   "<request id>" scored by the lease's expiry (epoch ms)
    rollup  hash   "<rollup key>|<counter>" -> int, and "<rollup key>" -> "" (the row exists)
    marks   hash   "<conversation mark>" -> "1": the day's conversations counted so far
    costs   list   one call's cost per entry (of one feature)

Scope keys, request ids, rollup keys and counter names arrive percent-encoded (only
``[A-Za-z0-9._%-]``), so the separators ``|`` and `` `` used here never occur inside them.

Amounts travel as decimal strings and are only ever added with ``HINCRBY`` (exact 64-bit
integers). The one comparison, ``spent + reserved > limit - amount``, is done in Lua
numbers (doubles); it is exact while limits and amounts stay below 2**53, which the
store checks before calling.

A script that fails half-way keeps its earlier writes (Redis does not roll scripts back),
so every script reads and checks everything before its first write: its keys' types first
(``types_ok``: a key of the day holding another type, written by another application, would
make a later command fail with ``WRONGTYPE`` after earlier increments), then the request's
state and the limits.
"""

from __future__ import annotations

__all__ = ["COMMIT", "RECORD_COST", "RELEASE", "RESERVE", "TOTALS"]

_COMMON = """
-- Each key is absent or of its type ("hash", "zset", "list", "string"), else the script's
-- error, before any write: WRONGTYPE half-way would keep the increments made before it.
local function types_ok(keys, kinds)
  for i, key in ipairs(keys) do
    local kind = redis.call('TYPE', key)['ok']
    if kind ~= 'none' and kind ~= kinds[i] then
      return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a ' .. kinds[i] ..
        ' (another application writes under this namespace): nothing was written')
    end
  end
  return nil
end

local function neg(amount)
  if string.sub(amount, 1, 1) == '-' then return string.sub(amount, 2) end
  return '-' .. amount
end

-- Give back what a live reservation holds and forget its amounts.
local function unreserve(bal, held, rid)
  local h = redis.call('HGET', held, rid)
  if not h then return end
  local field = nil
  for token in string.gmatch(h, '%S+') do
    if field == nil then
      field = token
    else
      if token ~= '0' then redis.call('HINCRBY', bal, field, neg(token)) end
      field = nil
    end
  end
  redis.call('HDEL', held, rid)
end

-- Reservations whose lease ran out (expiry <= now) are released and marked expired.
local function expire_due(bal, req, held, leases, now)
  local due = redis.call('ZRANGEBYSCORE', leases, '-inf', now)
  for _, rid in ipairs(due) do
    unreserve(bal, held, rid)
    redis.call('HSET', req, rid, 'expired')
  end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end
end

-- ttl is "<balances and rollups>:<request ids and leases>" in seconds (request ids need not
-- live as long as the money they settled).
local function ttls(spec)
  local long, short = string.match(spec, '^(%d+):(%d+)$')
  if long then return long, short end
  return spec, spec
end

local function touch(spec, keys)
  local long, short = ttls(spec)
  for _, key in ipairs(keys) do
    local tail = string.match(key, ':(%a+)$')
    if tail == 'req' or tail == 'held' or tail == 'leases' or tail == 'marks' then
      redis.call('EXPIRE', key, short)
    else
      redis.call('EXPIRE', key, long)
    end
  end
end
"""

RESERVE = (
    _COMMON
    + """
-- KEYS: bal req held leases; ARGV: ttl rid now expires checks
-- checks: "<scope|metric> <amount> <limit>" per check, space-separated ('-': no limit)
local bal, req, held, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, rid, now, expires = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wrong = types_ok({bal, req, held, leases}, {'hash', 'hash', 'hash', 'zset'})
if wrong then return wrong end
expire_due(bal, req, held, leases, now)
local state = redis.call('HGET', req, rid)
if state then return {'duplicate', state} end
local checks = {}
for prefix, amount, limit in string.gmatch(ARGV[5], '(%S+) (%S+) (%S+)') do
  checks[#checks + 1] = {prefix, amount, limit}
end
for i, c in ipairs(checks) do
  if c[3] ~= '-' then
    local spent = redis.call('HGET', bal, c[1] .. '|spent') or '0'
    local reserved = redis.call('HGET', bal, c[1] .. '|reserved') or '0'
    if tonumber(spent) + tonumber(reserved) > tonumber(c[3]) - tonumber(c[2]) then
      return {'refused', i, spent, reserved}
    end
  end
end
local parts = {}
for _, c in ipairs(checks) do
  local field = c[1] .. '|reserved'
  redis.call('HINCRBY', bal, field, c[2])
  parts[#parts + 1] = field
  parts[#parts + 1] = c[2]
end
redis.call('HSET', req, rid, 'reserved')
redis.call('HSET', held, rid, table.concat(parts, ' '))
redis.call('ZADD', leases, expires, rid)
touch(ttl, {bal, req, held, leases})
local out = {'reserved'}  -- then spent and reserved per check, after this reservation
for _, c in ipairs(checks) do
  out[#out + 1] = redis.call('HGET', bal, c[1] .. '|spent') or '0'
  out[#out + 1] = redis.call('HGET', bal, c[1] .. '|reserved')
end
return out
"""
)

COMMIT = (
    _COMMON
    + """
-- KEYS: bal req held leases rollup marks [costs] [legacy mark]
-- ARGV: ttl rid rollup_key cost charges counters conversation_mark ('': none) legacy_ttl ('': no
-- legacy mark; else the last key is the conversation's mark as earlier releases kept it, apart
-- from the commit, with SET NX EX: given on a single server, where it may sit in any slot)
-- charges: "<scope|metric> <amount>" per charge; counters: "<counter> <increment>" per counter
local bal, req, held, leases, rollup, marks = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local ttl, rid, rkey, cost, mark, legacy_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7], ARGV[8]
local legacy = nil
if legacy_ttl ~= '' then legacy = KEYS[#KEYS] end
local costs = KEYS[7]
if legacy and #KEYS == 7 then costs = nil end
local keys, kinds = {bal, req, held, leases, rollup, marks}, {'hash', 'hash', 'hash', 'zset', 'hash', 'hash'}
if costs then
  keys[#keys + 1] = costs
  kinds[#kinds + 1] = 'list'
end
if legacy then
  keys[#keys + 1] = legacy
  kinds[#kinds + 1] = 'string'
end
local wrong = types_ok(keys, kinds)
if wrong then return wrong end
local state = redis.call('HGET', req, rid)
if state == 'committed' then return {0, 'committed'} end
local charges = {}
for field, amount in string.gmatch(ARGV[5], '(%S+) (%S+)') do
  charges[#charges + 1] = {field .. '|spent', amount}
end
if state == 'reserved' then
  unreserve(bal, held, rid)
  redis.call('ZREM', leases, rid)
end
local after = {}  -- spent per field after its increment (HINCRBY answers it)
for _, c in ipairs(charges) do
  after[c[1]] = redis.call('HINCRBY', bal, c[1], c[2])
end
redis.call('HSETNX', rollup, rkey, '')
for counter, increment in string.gmatch(ARGV[6], '(%S+) (%S+)') do
  redis.call('HINCRBY', rollup, rkey .. '|' .. counter, increment)
end
-- The conversation counts once per day and feature: the first commit naming it sets its mark
-- (and the mark an older release keeps apart, so neither version counts it again).
if mark ~= '' then
  local first = redis.call('HSETNX', marks, mark, '1') == 1
  if first and legacy then
    first = redis.call('SET', legacy, '1', 'NX', 'EX', legacy_ttl) ~= false
  end
  if first then redis.call('HINCRBY', rollup, rkey .. '|conversations', 1) end
  touch(ttl, {marks})  -- kept as long as the day's request ids
end
redis.call('HSET', req, rid, 'committed')
touch(ttl, {bal, req, rollup})  -- held and leases were only deleted from: no new data to keep
if costs then
  redis.call('RPUSH', costs, cost)
  redis.call('EXPIRE', costs, (ttls(ttl)))
end
local out = {1, state or ''}  -- then spent per charge, after this commit
for _, c in ipairs(charges) do
  out[#out + 1] = after[c[1]]
end
return out
"""
)

RELEASE = (
    _COMMON
    + """
-- KEYS: bal req held leases; ARGV: ttl rid forget ('1': give a live reservation back and
-- forget its id, change nothing else)
local bal, req, held, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl, rid, forget = ARGV[1], ARGV[2], ARGV[3] == '1'
local wrong = types_ok({bal, req, held, leases}, {'hash', 'hash', 'hash', 'zset'})
if wrong then return wrong end
local state = redis.call('HGET', req, rid)
if not state then
  if not forget then
    redis.call('HSET', req, rid, 'released')
    touch(ttl, {req})
  end
  return 0
end
if state ~= 'reserved' then return 0 end
unreserve(bal, held, rid)
redis.call('ZREM', leases, rid)
if forget then
  redis.call('HDEL', req, rid)
else
  redis.call('HSET', req, rid, 'released')
end
touch(ttl, {bal, req, held, leases})
return 1
"""
)

TOTALS = (
    _COMMON
    + """
-- KEYS: bal req held leases; ARGV: now, then scope|metric ...; returns spent, reserved per scope
local bal, req, held, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local wrong = types_ok({bal, req, held, leases}, {'hash', 'hash', 'hash', 'zset'})
if wrong then return wrong end
expire_due(bal, req, held, leases, ARGV[1])
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('HGET', bal, ARGV[i] .. '|spent') or '0'
  out[#out + 1] = redis.call('HGET', bal, ARGV[i] .. '|reserved') or '0'
end
return out
"""
)

RECORD_COST = """
-- KEYS: costs; ARGV: ttl cost
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'list' then
  return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' holds a ' .. kind ..
    ', not a list: nothing was written')
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
