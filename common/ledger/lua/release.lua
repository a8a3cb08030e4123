-- release: give back the grant of a reservation that was never settled.
--
-- KEYS[1]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent
-- KEYS[2]  {c:<id>}:res:<tick>  the tick's reservation record
-- KEYS[3]  {c:<id>}:open        sorted set of open reservation ticks
-- KEYS[4]  {c:<id>}:ledger      stream of money movements
-- ARGV[1]  tick, an integer >= 0
--
-- Returns {outcome, amount}:
--   "released"          this call moved amount from reserved back to remaining (`release` entries);
--   "already_released"  an earlier call did; amount is what it released; nothing written;
--   "settled"           the reservation was settled, it holds nothing; amount 0, nothing written;
--   "none"              the tick was never reserved; amount 0, nothing written (a stale tick left in
--                       the open set without its record is removed from it).
-- Refusals (error reply, nothing written): "LEDGER bad_input ...", "LEDGER corrupt ...".

local MAX = 9007199254740991 -- 2^53 - 1: Lua numbers are doubles, exact up to here

local function fail(code, message)
    error({ err = 'LEDGER ' .. code .. ' ' .. message })
end

local function fmt(n)
    return string.format('%d', n)
end

-- The values of <prefix><platform> fields of a record, one HMGET for all platforms.
local function per_platform(key, prefix, platforms)
    local names = {}
    for i, platform in ipairs(platforms) do
        names[i] = prefix .. platform
    end
    return redis.call('HMGET', key, unpack(names))
end

local raw = ARGV[1]
if type(raw) ~= 'string' or #raw > 16 or not string.match(raw, '^%d+$') or tonumber(raw) > MAX then
    fail('bad_input', 'tick: must be an integer >= 0, got ' .. tostring(raw))
end
local tick = tonumber(raw)

local record = redis.call('HMGET', KEYS[2], 'state', 'platforms', 'granted', 'released')
local state = record[1]
if not state then
    redis.call('ZREM', KEYS[3], fmt(tick)) -- a stale entry (record deleted) must not keep the sweeper busy
    return { 'none', 0 }
end
if state == 'released' then
    return { 'already_released', tonumber(record[4]) }
end
if state == 'settled' then
    return { 'settled', 0 }
end

local granted = tonumber(record[3])
local balance = redis.call('HMGET', KEYS[1], 'remaining', 'reserved')
if not balance[1] or tonumber(balance[2]) < granted then
    fail('corrupt', 'budget holds ' .. tostring(balance[2]) .. ' reserved, less than the '
        .. fmt(granted) .. ' this reservation granted')
end

redis.call('HSET', KEYS[1], 'remaining', fmt(tonumber(balance[1]) + granted),
    'reserved', fmt(tonumber(balance[2]) - granted))
redis.call('HSET', KEYS[2], 'state', 'released', 'released', fmt(granted))
redis.call('ZREM', KEYS[3], fmt(tick))
local platforms = {}
for platform in string.gmatch(record[2], '[^,]+') do
    platforms[#platforms + 1] = platform
end
for i, raw in ipairs(per_platform(KEYS[2], 'g:', platforms)) do
    local platform, amount = platforms[i], tonumber(raw)
    if amount > 0 then
        redis.call('XADD', KEYS[4], '*', 'kind', 'release', 'tick', fmt(tick), 'platform', platform,
            'amount', fmt(amount))
    end
end
return { 'released', granted }
