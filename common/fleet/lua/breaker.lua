-- breaker: record what one tick's submit to a platform did, in the platform's circuit breaker.
--
-- KEYS[1]  ce:platform:<id>:breaker  hash: state (closed, open), failures (failing ticks in a row),
--          last_failure, last_success (ticks), open_until (tick from which it is tried again),
--          opened (times it opened), error (the last failure, one line)
-- ARGV[1]  tick, an integer >= 0
-- ARGV[2]  "ok" or "failed"
-- ARGV[3]  failing ticks in a row that open the breaker (>= 1)
-- ARGV[4]  ticks it then stays open before a tick tries the platform again (>= 1)
-- ARGV[5]  for "failed": the error, one line
--
-- Returns {state, failures, open_until}. Idempotent per (platform, tick, outcome): the groups of one
-- tick that fail count as one failing tick, and a client retry changes nothing. A failure while open
-- (the trial tick after open_until: half-open) opens it again for ARGV[4] ticks; a success closes it.

local tick = tonumber(ARGV[1])
local threshold = tonumber(ARGV[3])
local cooldown = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'state', 'failures', 'last_failure', 'last_success', 'open_until')
local state = b[1] or 'closed'
local failures = tonumber(b[2]) or 0
local last_failure = tonumber(b[3]) or -1
local last_success = tonumber(b[4]) or -1
local open_until = tonumber(b[5]) or 0

if ARGV[2] == 'ok' then
    if tick > last_success then
        redis.call('HSET', KEYS[1], 'last_success', tick)
    end
    if tick > last_failure and (state ~= 'closed' or failures > 0) then
        state, failures = 'closed', 0
        redis.call('HSET', KEYS[1], 'state', state, 'failures', failures)
    end
else
    redis.call('HSET', KEYS[1], 'error', ARGV[5] or '')
    if tick > last_failure then
        -- In a row: no success since the last failing tick.
        if last_failure >= 0 and last_success < last_failure then
            failures = failures + 1
        else
            failures = 1
        end
        redis.call('HSET', KEYS[1], 'failures', failures, 'last_failure', tick)
        if failures >= threshold and (state == 'closed' or tick >= open_until) then
            state, open_until = 'open', tick + 1 + cooldown
            redis.call('HSET', KEYS[1], 'state', state, 'open_until', open_until)
            redis.call('HINCRBY', KEYS[1], 'opened', 1)
        end
    end
end
return {state, failures, open_until}
