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
 * writes included.
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
for _, c in ipairs(changes) do
  local cur = current(c.key)
  if c.op == 'put' then
    if cur and (cur.registered_by ~= c.record.registered_by or
        ((cur.public_key or '') ~= '' and cur.public_key ~= c.record.public_key) or
        (c.record.key_sha256 ~= '' and cur.key_sha256 ~= c.record.key_sha256)) then
      return {'conflict', c.record.name}
    end
    now[c.key] = c.record
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
redis.call('PUBLISH', KEYS[2], ARGV[1] .. ' ' .. ARGV[2])
presence(3, ARGV[1], 3)
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
 * Records a file put or deleted. KEYS: files (hash), news channel. ARGV: op,
 * field, record JSON. The record and its news go together, so every instance
 * sees what the hash holds.
 */
export const FILE_SCRIPT = `
if ARGV[1] == 'put' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
else redis.call('HDEL', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', KEYS[2], ARGV[1] .. ' ' .. ARGV[3])
return 0
`;
