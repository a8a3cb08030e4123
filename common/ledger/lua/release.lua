-- release: give back the grant of a reservation that no bid was placed against.
--
-- KEYS[1]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent
-- KEYS[2]  {c:<id>}:res:<tick>  the tick's reservation record
-- KEYS[3]  {c:<id>}:open        sorted set of unsettled (open or submitted) reservation ticks
-- KEYS[4]  {c:<id>}:ledger      stream of money movements
-- ARGV[1]  tick, an integer >= 0
-- ARGV[2]  optional: "sweep" when the sweeper calls. A submitted reservation is then charged at its
--          full grant instead of being refused (see below).
--
-- An open reservation (reserved, never submitted) is released. A submitted one is never released:
-- its bids went out and a platform may have charged up to each grant, so giving the grant back
-- would let the campaign spend that money twice. Without "sweep" the call is refused; with it,
-- the reservation is settled with every grant as its cost (`settle` entries marked `by sweeper`,
-- record field `charged_by` = "sweeper"): the ledger never under-counts, and what the bids did not
-- really spend is lost to the campaign (an operator may give it back with adjust). A late real
-- settle then replays this charge; a real settle that ran first makes this call a no-op.
--
-- Returns {outcome, amount}:
--   "released"          this call moved amount from reserved back to remaining (`release` entries);
--   "charged"           (sweep only) this call moved amount, the full grant, from reserved to spent;
--   "already_released"  an earlier call did; amount is what it released; nothing written;
--   "settled"           the reservation was settled (by settle, or charged by a sweep), it holds
--                       nothing; amount 0, nothing written;
--   "none"              the tick was never reserved; amount 0, nothing written (a stale tick left in
--                       the open set without its record is removed from it).
-- Refusals (error reply, nothing written): "LEDGER bad_input ...", "LEDGER corrupt ...",
-- "LEDGER submitted ..." (a submitted reservation, without "sweep").

local tick = amount(ARGV[1], 'tick')
local sweep = ARGV[2] == 'sweep'
if ARGV[2] ~= nil and not sweep then
    fail('bad_input', 'mode: must be "sweep" or absent, got ' .. tostring(ARGV[2]))
end

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
if state == 'submitted' and not sweep then
    fail('submitted', 'the reservation was submitted: bids may have spent its grant, so only settle closes it')
end
if state ~= 'open' and state ~= 'submitted' then
    fail('corrupt', 'the reservation has an unknown state ' .. string.format('%q', state))
end

local granted = tonumber(record[3])
local balance = redis.call('HMGET', KEYS[1], 'remaining', 'reserved', 'spent')
if not balance[1] or tonumber(balance[2]) < granted then
    fail('corrupt', 'budget holds ' .. tostring(balance[2]) .. ' reserved, less than the '
        .. fmt(granted) .. ' this reservation granted')
end

local platforms = {}
for platform in string.gmatch(record[2], '[^,]+') do
    platforms[#platforms + 1] = platform
end
local grants = per_platform(KEYS[2], 'g:', platforms)

if state == 'submitted' then
    -- The sweeper closes a submitted reservation: every grant is charged as spent.
    local fields = { 'state', 'settled', 'spent', fmt(granted), 'returned', '0', 'charged_by', 'sweeper' }
    for i, platform in ipairs(platforms) do
        fields[#fields + 1] = 'c:' .. platform
        fields[#fields + 1] = fmt(tonumber(grants[i]))
    end
    redis.call('HSET', KEYS[1], 'reserved', fmt(tonumber(balance[2]) - granted),
        'spent', fmt(tonumber(balance[3]) + granted))
    redis.call('HSET', KEYS[2], unpack(fields))
    redis.call('ZREM', KEYS[3], fmt(tick))
    for i, platform in ipairs(platforms) do
        local amount = tonumber(grants[i])
        if amount > 0 then
            redis.call('XADD', KEYS[4], '*', 'kind', 'settle', 'tick', fmt(tick), 'platform', platform,
                'amount', fmt(amount), 'by', 'sweeper')
        end
    end
    return { 'charged', granted }
end

redis.call('HSET', KEYS[1], 'remaining', fmt(tonumber(balance[1]) + granted),
    'reserved', fmt(tonumber(balance[2]) - granted))
redis.call('HSET', KEYS[2], 'state', 'released', 'released', fmt(granted))
redis.call('ZREM', KEYS[3], fmt(tick))
for i, platform in ipairs(platforms) do
    local amount = tonumber(grants[i])
    if amount > 0 then
        redis.call('XADD', KEYS[4], '*', 'kind', 'release', 'tick', fmt(tick), 'platform', platform,
            'amount', fmt(amount))
    end
end
return { 'released', granted }
