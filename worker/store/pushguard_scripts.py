"""The push guard's Lua scripts (see worker/store/pushguard.py for what they guard): each
runs atomically in Redis, on the keys it is given in KEYS."""

# A sync batch costs a set (C-level SADD) and two hash lookups, not a write per contact.
# Contacts and times travel as one newline-separated string each: thousands of separate
# arguments cost more to encode than the work itself. Times come from Redis's own clock,
# so workers with skewed clocks agree.

HELPERS = """
local function split(text, numbers)
  local out = {}
  for item in string.gmatch(text, '[^\\n]+') do
    out[#out + 1] = numbers and tonumber(item) or item
  end
  return out
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- "first second" → first, tonumber(second).
local function pair(value)
  local gap = string.find(value, ' ', 1, true)
  return string.sub(value, 1, gap - 1), tonumber(string.sub(value, gap + 1))
end
-- Keep `key` for at least `ttl` ms from now; never shorten it (another process may have
-- written an entry that lives longer).
local function outlive(key, ttl)
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, math.max(ttl, 1)) end
end
-- Write fields {name, value, ...} to a hash and their expiries to its sorted set.
local function put(hash, expiries, fields, scores, ttl)
  redis.call('HSET', hash, unpack(fields))
  redis.call('ZADD', expiries, unpack(scores))
  outlive(hash, ttl)
  outlive(expiries, ttl)
end
"""

# KEYS: claims, sent, batches, batch:<token>. ARGV: token, ttl ms, contacts, mutated µs.
# One status digit per contact, as one string (0 claimed, 1 busy, 2 newer sent).
CLAIM_SYNC = HELPERS + """
local claims = KEYS[1]
local sent = KEYS[2]
local batches = KEYS[3]
local batch = KEYS[4]
local token, ttl = ARGV[1], tonumber(ARGV[2])
local cids, times = split(ARGV[3], false), split(ARGV[4], true)
local now = now_ms()
local holders = redis.call('HMGET', claims, unpack(cids))
local markers = redis.call('HMGET', sent, unpack(cids))
local out, taken = {}, {}
for i = 1, #cids do
  local status = 0
  if holders[i] then
    local _, expiry = pair(holders[i])
    if expiry > now then status = 1 end
  end
  if status == 0 and markers[i] then
    local us, expiry = pair(markers[i])
    if expiry > now and tonumber(us) > times[i] then status = 2 end
  end
  if status == 0 then taken[#taken + 1] = cids[i] end
  out[i] = status
end
if #taken > 0 then
  redis.call('SADD', batch, unpack(taken))
  redis.call('PEXPIRE', batch, ttl)
  redis.call('ZADD', batches, now + ttl, token)
  outlive(batches, ttl)
end
-- One digit per contact in one string: a reply of a thousand integers cost the client
-- more to parse than the script's work.
return table.concat(out)
"""

# KEYS: claims, claims:exp, batches, then the sets of the batches the caller knows of.
# ARGV: token, ttl ms, contacts, then those batches' tokens. A contact in a live sync batch,
# or claimed by another transaction, is busy. A live batch the caller did not name: nothing
# is claimed, the reply is {'batches', live tokens...} to ask again with.
CLAIM_POINTS = HELPERS + """
local claims = KEYS[1]
local expiries = KEYS[2]
local batches = KEYS[3]
local token, ttl = ARGV[1], tonumber(ARGV[2])
local cids = split(ARGV[3], false)
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', batches, '-inf', now)
local live = redis.call('ZRANGE', batches, 0, -1)
local named = {}
for i = 4, #ARGV do named[ARGV[i]] = i end
local alive = {}
for _, batch in ipairs(live) do
  if not named[batch] then
    table.insert(live, 1, 'batches')
    return live
  end
  alive[named[batch]] = true
end
local busy = {}
for i = 4, #KEYS do
  if alive[i] then
    local member = redis.call('SMISMEMBER', KEYS[i], unpack(cids))
    for j = 1, #cids do
      if member[j] == 1 then busy[j] = true end
    end
  end
end
local holders = redis.call('HMGET', claims, unpack(cids))
local out, fields, scores = {}, {}, {}
for i = 1, #cids do
  if not busy[i] and holders[i] then
    local holder, expiry = pair(holders[i])
    busy[i] = holder ~= token and expiry > now
  end
  if busy[i] then
    out[i] = 1
  else
    fields[#fields + 1] = cids[i]
    fields[#fields + 1] = token .. ' ' .. (now + ttl)
    scores[#scores + 1] = now + ttl
    scores[#scores + 1] = cids[i]
    out[i] = 0
  end
end
if #fields > 0 then put(claims, expiries, fields, scores, ttl) end
return out
"""

# KEYS: claims, claims:exp, sent, sent:exp. ARGV: token, marker ttl ms, released contacts,
# pushed contacts, their µs. The markers are set before the claims go, so no sync push can
# slip in between; a marker only ever moves forward (past a live one; an expired one is
# absent).
RELEASE_POINTS = HELPERS + """
local claims = KEYS[1]
local claim_expiries = KEYS[2]
local sent = KEYS[3]
local sent_expiries = KEYS[4]
local token, ttl = ARGV[1], tonumber(ARGV[2])
local released, pushed, times = split(ARGV[3], false), split(ARGV[4], false), split(ARGV[5], true)
local now = now_ms()
if #pushed > 0 then
  local known = redis.call('HMGET', sent, unpack(pushed))
  local fields, scores = {}, {}
  for i = 1, #pushed do
    local us = -1
    if known[i] then
      local held, expiry = pair(known[i])
      if expiry > now then us = tonumber(held) end
    end
    if us < times[i] then
      fields[#fields + 1] = pushed[i]
      fields[#fields + 1] = string.format('%d', times[i]) .. ' ' .. (now + ttl)
      scores[#scores + 1] = now + ttl
      scores[#scores + 1] = pushed[i]
    end
  end
  if #fields > 0 then put(sent, sent_expiries, fields, scores, ttl) end
end
if #released > 0 then
  local holders = redis.call('HMGET', claims, unpack(released))
  local mine = {}
  for i = 1, #released do
    if holders[i] and (pair(holders[i])) == token then mine[#mine + 1] = released[i] end
  end
  if #mine > 0 then
    redis.call('HDEL', claims, unpack(mine))
    redis.call('ZREM', claim_expiries, unpack(mine))
  end
end
return 0
"""

# KEYS: claims, claims:exp, sent, sent:exp, batches. ARGV: chunk size. Drops up to a chunk
# of expired claims and of expired markers (a dead holder's, old pushes'), reading only
# those; returns {claims dropped, markers dropped}.
PRUNE = HELPERS + """
local function drop_expired(hash, expiries, now, limit)
  local gone = redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, limit)
  if #gone > 0 then
    redis.call('HDEL', hash, unpack(gone))
    redis.call('ZREM', expiries, unpack(gone))
  end
  return #gone
end
local now, limit = now_ms(), tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
return {drop_expired(KEYS[1], KEYS[2], now, limit), drop_expired(KEYS[3], KEYS[4], now, limit)}
"""
