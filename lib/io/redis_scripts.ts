/**
 * The Lua scripts of the Redis store (`lib/io/redis_store.ts`): each is one
 * atomic step in Redis, its writes and its news together.
 *
 * @module
 */

// Session writes, shared by the apply and presence scripts. KEYS from `k`:
// leases (sorted set of deadlines), sessions (hash), news channel. ARGV from
// `first`: groups of op, name key, deadline, record JSON. A session's hash
// value is "<instance> <record>"; news is "<instance> <op> <record>".
const PRESENCE_FUNCTION = `
local function presence(k, origin, first)
  for i = first, #ARGV, 4 do
    local op, key, deadline, record = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local mine = false
    if op ~= 'join' then
      local cur = redis.call('HGET', KEYS[k + 1], key)
      mine = cur and string.sub(cur, 1, string.len(origin) + 1) == origin .. ' '
    end
    if op == 'leave' then
      if mine then
        redis.call('ZREM', KEYS[k], key)
        redis.call('HDEL', KEYS[k + 1], key)
        redis.call('PUBLISH', KEYS[k + 2], origin .. ' leave ' .. record)
      end
    elseif op == 'renew' and mine and redis.call('ZSCORE', KEYS[k], key) then
      redis.call('ZADD', KEYS[k], 'XX', deadline, key)
    else
      -- A join, or a renew of a lease a sweep ended: joins again.
      redis.call('ZADD', KEYS[k], deadline, key)
      redis.call('HSET', KEYS[k + 1], key, origin .. ' ' .. record)
      redis.call('PUBLISH', KEYS[k + 2], origin .. ' join ' .. record)
    end
  end
end
`;

/**
 * Applies a batch of registry changes, publishes it, then makes the session
 * writes that ride with it. KEYS: registry (hash), registry news, then the
 * presence keys. ARGV: instance, changes JSON, then session writes. The
 * changes are checked first: a refused batch writes nothing, its session
 * writes included. A name that the same key holds already (a register
 * retried after a lost reply) is kept as it is and left out of the news:
 * 'kept'.
 */
export const APPLY_SCRIPT = PRESENCE_FUNCTION + `
local changes = cjson.decode(ARGV[2])
local now = {}
local function current(key)
  if now[key] ~= nil then return now[key] end
  local v = redis.call('HGET', KEYS[1], key)
  if v then return cjson.decode(v) end
  return false
end
local news, kept = ARGV[2], {}
for _, c in ipairs(changes) do
  local cur = current(c.key)
  if c.op == 'put' then
    if cur and cur.registered_by ~= c.record.registered_by and (cur.public_key or '') ~= '' and
        cur.public_key == c.record.public_key then
      -- The same key registering its name again (an earlier reply was lost): already done.
      kept[c.key] = true
    elseif cur and (cur.registered_by ~= c.record.registered_by or
        ((cur.public_key or '') ~= '' and cur.public_key ~= c.record.public_key) or
        (c.record.key_sha256 ~= '' and cur.key_sha256 ~= c.record.key_sha256)) then
      return {'conflict', c.record.name}
    else
      now[c.key] = c.record
    end
  elseif cur and cur.key_sha256 == c.key_sha256 and (cur.public_key or '') == c.public_key then
    -- Seen since the deleting instance looked (a login elsewhere): kept.
    if c.last_seen and cur.last_seen and cur.last_seen ~= c.last_seen then
      return {'seen', c.name}
    end
    now[c.key] = false
  end
end
for key, value in pairs(now) do
  if value then redis.call('HSET', KEYS[1], key, cjson.encode(value))
  else redis.call('HDEL', KEYS[1], key) end
end
if next(kept) then
  local told = {}
  for _, c in ipairs(changes) do
    if not (c.op == 'put' and kept[c.key]) then told[#told + 1] = c end
  end
  news = #told > 0 and cjson.encode(told) or nil
end
if news then redis.call('PUBLISH', KEYS[2], ARGV[1] .. ' ' .. news) end
presence(3, ARGV[1], 3)
if next(kept) then return {'kept', ''} end
return {'ok', ''}
`;

/** Makes session writes on their own. KEYS: the presence keys. ARGV: instance, then session writes. */
export const PRESENCE_SCRIPT = PRESENCE_FUNCTION + `
presence(1, ARGV[1], 2)
return 0
`;

/**
 * Ends the leases past their deadline. KEYS: the presence keys; ARGV: now,
 * most leases to end. Whoever removes a lease publishes its leave, so each
 * leave is told once.
 */
export const SWEEP_SCRIPT = `
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, key in ipairs(expired) do
  redis.call('ZREM', KEYS[1], key)
  local cur = redis.call('HGET', KEYS[2], key)
  redis.call('HDEL', KEYS[2], key)
  if cur then
    local space = string.find(cur, ' ', 1, true)
    redis.call('PUBLISH', KEYS[3], 'sweep leave ' .. string.sub(cur, space + 1))
  end
end
return #expired
`;

/**
 * Records a file put or deleted. KEYS: files (hash), news channel, the
 * owner's tombstones (set). ARGV: op, field, record JSON. The record and its
 * news go together, so every instance sees what the hash holds; 'gone' is a
 * delete that also leaves a tombstone.
 */
export const FILE_SCRIPT = `
if ARGV[1] == 'put' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else redis.call('HDEL', KEYS[1], ARGV[2]) end
if ARGV[1] == 'gone' then redis.call('SADD', KEYS[3], ARGV[3]) end
redis.call('PUBLISH', KEYS[2], (ARGV[1] == 'put' and 'put' or 'delete') .. ' ' .. ARGV[3])
return 0
`;

/** A pair's latest failed logins kept (blocks double up to their cap within far fewer). */
const LOGIN_FAILURES_KEPT = 64;

/**
 * Records a failed or successful login. KEYS: failures (hash: pair -> JSON
 * list of times), their horizons (sorted set), news channel, registry.
 * ARGV: origin, ok|failed, pair, time, keep ms, news, name key, claimed key.
 * A failure whose claimed key is the one the registry binds the name to is
 * the owner's (the instance's replica lagged): nothing is counted, and the
 * record is returned ('owner'). Otherwise a failure returns the pair's list
 * with it, last ('failed'): appended here, atomically, so failures at once
 * on several instances each count the others'.
 */
export const LOGIN_SCRIPT = `
if ARGV[2] == 'ok' then
  redis.call('HDEL', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('PUBLISH', KEYS[3], ARGV[1] .. ' ' .. ARGV[6])
  return {'ok', ''}
end
if ARGV[8] ~= '' then
  local v = redis.call('HGET', KEYS[4], ARGV[7])
  if v and cjson.decode(v).public_key == ARGV[8] then return {'owner', v} end
end
local v = redis.call('HGET', KEYS[1], ARGV[3])
local times = v and cjson.decode(v) or {}
table.insert(times, tonumber(ARGV[4]))
while #times > ${LOGIN_FAILURES_KEPT} do table.remove(times, 1) end
local list = cjson.encode(times)
redis.call('HSET', KEYS[1], ARGV[3], list)
redis.call('ZADD', KEYS[2], tonumber(ARGV[4]) + tonumber(ARGV[5]), ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[1] .. ' ' .. ARGV[6])
return {'failed', list}
`;

/** Forgets the pairs past their horizon and returns the rest. KEYS as above; ARGV: now. */
export const LOGIN_FAILURES_SCRIPT = `
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, pair in ipairs(gone) do redis.call('HDEL', KEYS[1], pair) end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
return redis.call('HGETALL', KEYS[1])
`;
