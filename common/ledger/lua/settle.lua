-- settle: charge what one tick's bids cost against that tick's reservation, once.
-- The reservation may be open (reserved, never submitted) or submitted (its bids went out).
--
-- KEYS[1]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent
-- KEYS[2]  {c:<id>}:res:<tick>  the tick's reservation record
-- KEYS[3]  {c:<id>}:open        sorted set of unsettled (open or submitted) reservation ticks
-- KEYS[4]  {c:<id>}:ledger      stream of money movements
-- ARGV[1]  tick, an integer >= 0
-- ARGV[2], ARGV[3], ...  platform, cost pairs (cost in micro-units >= 0); a granted platform that
--          is not named cost nothing. No pairs at all settles a tick that spent nothing.
--
-- Each cost moves from reserved to spent (a `settle` entry); the rest of each platform's grant goes
-- back to remaining (a `release` entry).
-- Returns {replay, remaining, returned, platform_1, cost_1, platform_2, cost_2, ...} over the
-- granted platforms in grant order. replay is 1 when the tick was already settled (by an earlier
-- settle, or charged at its full grant by the sweeper): the first result comes back, the costs of
-- this call are ignored and nothing is written.
-- Refusals (error reply, nothing written): "LEDGER bad_input ...", "LEDGER no_reservation ...",
-- "LEDGER released ...", "LEDGER over_grant ...", "LEDGER unknown_platform ...", "LEDGER corrupt ...".

local tick = amount(ARGV[1], 'tick')
if #ARGV % 2 ~= 1 then
    fail('bad_input', 'costs: expected platform, cost pairs')
end
local costs = {}
for i = 2, #ARGV, 2 do
    local platform = ARGV[i]
    if costs[platform] then
        fail('bad_input', 'costs.' .. platform .. ': platform given twice')
    end
    costs[platform] = amount(ARGV[i + 1], 'costs.' .. platform)
end

local record = redis.call('HMGET', KEYS[2], 'state', 'platforms', 'granted', 'returned')
local state = record[1]
if not state then
    fail('no_reservation', 'this tick was never reserved')
end
if state == 'released' then
    fail('released', 'the reservation was released; its grant is back in remaining')
end
if state ~= 'open' and state ~= 'submitted' and state ~= 'settled' then
    fail('corrupt', 'the reservation has an unknown state ' .. string.format('%q', state))
end

local platforms = {}
for platform in string.gmatch(record[2], '[^,]+') do
    platforms[#platforms + 1] = platform
end

if state == 'settled' then
    local spent = per_platform(KEYS[2], 'c:', platforms)
    local out = { 1, tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0'), tonumber(record[4]) }
    for i, platform in ipairs(platforms) do
        out[#out + 1] = platform
        out[#out + 1] = tonumber(spent[i])
    end
    return out
end

local grants = {}
for i, granted in ipairs(per_platform(KEYS[2], 'g:', platforms)) do
    grants[platforms[i]] = tonumber(granted)
end
local problems = {}
for i = 2, #ARGV, 2 do
    local platform = ARGV[i]
    local granted = grants[platform]
    if not granted then
        problems[#problems + 1] = 'costs.' .. platform .. ': platform was not reserved for this tick'
    elseif costs[platform] > granted then
        problems[#problems + 1] = 'costs.' .. platform .. ': cost ' .. fmt(costs[platform])
            .. ' exceeds the ' .. fmt(granted) .. ' granted'
    end
end
if #problems > 0 then
    local code = 'over_grant'
    for i = 2, #ARGV, 2 do
        if not grants[ARGV[i]] then
            code = 'unknown_platform'
        end
    end
    fail(code, table.concat(problems, '; '))
end

local granted_total = tonumber(record[3])
local balance = redis.call('HMGET', KEYS[1], 'remaining', 'reserved', 'spent')
if not balance[1] or tonumber(balance[2]) < granted_total then
    fail('corrupt', 'budget holds ' .. tostring(balance[2]) .. ' reserved, less than the '
        .. fmt(granted_total) .. ' this reservation granted')
end

local spent = 0
local out = { 0, 0, 0 }
local fields = { 'state', 'settled' }
for _, platform in ipairs(platforms) do
    local cost = costs[platform] or 0
    spent = spent + cost
    out[#out + 1] = platform
    out[#out + 1] = cost
    fields[#fields + 1] = 'c:' .. platform
    fields[#fields + 1] = fmt(cost)
end
local returned = granted_total - spent
local remaining = tonumber(balance[1]) + returned
out[2] = remaining
out[3] = returned
fields[#fields + 1] = 'spent'
fields[#fields + 1] = fmt(spent)
fields[#fields + 1] = 'returned'
fields[#fields + 1] = fmt(returned)

redis.call('HSET', KEYS[1], 'remaining', fmt(remaining), 'reserved', fmt(tonumber(balance[2]) - granted_total),
    'spent', fmt(tonumber(balance[3]) + spent))
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('ZREM', KEYS[3], fmt(tick))
for _, platform in ipairs(platforms) do
    local cost = costs[platform] or 0
    if cost > 0 then
        redis.call('XADD', KEYS[4], '*', 'kind', 'settle', 'tick', fmt(tick), 'platform', platform, 'amount', fmt(cost))
    end
    local rest = grants[platform] - cost
    if rest > 0 then
        redis.call('XADD', KEYS[4], '*', 'kind', 'release', 'tick', fmt(tick), 'platform', platform, 'amount', fmt(rest))
    end
end
return out
