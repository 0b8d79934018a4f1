"""The Lua scripts that make each shared-state operation one atomic step in Redis.

Times come from Redis's own clock (`TIME`), so relays on machines whose clocks disagree still agree on when a
lease or a sign-in penalty ends. Every key written gets an expiry.
"""

from __future__ import annotations

#: KEYS: all leases, this identity's leases. ARGV: lease id, max in all, max per identity, lease ms.
#: Returns `ok`, `capacity` or `identity_sessions`. Leases whose expiry passed are dropped first.
TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 'capacity' end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 'identity_sessions' end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 'ok'
"""

#: KEYS: all leases, then the identity key of each lease. ARGV: lease ms, then the lease ids in the same order.
#: A lease that expired meanwhile (the store was away) is put back: its session is still open.
RENEW_SLOTS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #KEYS do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  redis.call('ZADD', KEYS[i], now + ttl, ARGV[i])
  redis.call('PEXPIRE', KEYS[i], ttl)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #KEYS - 1
"""

#: KEYS: all leases, this identity's leases. ARGV: lease id.
RELEASE_SLOT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

#: KEYS: one day's spending of one identity in one unit. ARGV: amount (negative: refund), expiry (Unix seconds).
#: Never below zero. Returns the new total as a string.
ADD_SPENDING = """
local total = tonumber(redis.call('INCRBYFLOAT', KEYS[1], ARGV[1]))
if total < 0 then
  total = 0
  redis.call('SET', KEYS[1], '0')
end
redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]))
return tostring(total)
"""

#: KEYS: one client address's bucket. ARGV: burst, refill seconds, `fail` to count a failure or `peek`.
#: The same token bucket as relay.auth.AttemptLimiter. Returns seconds to wait (0: may try now).
LOGIN_ATTEMPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local burst = tonumber(ARGV[1])
local refill = tonumber(ARGV[2])
local saved = redis.call('HMGET', KEYS[1], 'allowance', 'updated')
local allowance = burst
if saved[1] then
  allowance = math.min(burst, tonumber(saved[1]) + (now - tonumber(saved[2])) / refill)
end
if ARGV[3] == 'fail' then
  allowance = allowance - 1
  redis.call('HSET', KEYS[1], 'allowance', tostring(allowance), 'updated', tostring(now))
  redis.call('EXPIRE', KEYS[1], math.ceil((burst - allowance) * refill) + 1)
end
if allowance >= 1 then return 0 end
return math.max(1, math.ceil((1 - allowance) * refill))
"""
