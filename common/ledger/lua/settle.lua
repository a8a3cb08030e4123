-- settle: record what one tick's bids cost, once; no cost a platform reports is ever dropped.
--
-- KEYS[1]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent, overdraft
-- KEYS[2]  {c:<id>}:res:<tick>  the tick's reservation record
-- KEYS[3]  {c:<id>}:open        sorted set of unsettled (open or submitted) reservation ticks
-- KEYS[4]  {c:<id>}:ledger      stream of money movements
-- KEYS[5]  {c:<id>}:history     compacted history; its `watermark` is read
-- ARGV[1]  tick, an integer >= 0
-- ARGV[2], ARGV[3], ...  platform, cost pairs (cost in micro-units >= 0); a granted platform that
--          is not named cost nothing. No pairs at all settles a tick that spent nothing.
--
-- An open or submitted reservation: each cost up to its grant moves from reserved to spent (a
-- `settle` entry), the rest of each grant goes back to remaining (`release`). A cost above its grant,
-- or on a platform the reservation does not name, is charged in full all the same: the part beyond
-- the grant comes out of remaining (`charge` entries) and, when remaining is short, is recorded as
-- `overdraft` (entries of that kind, and the budget's `overdraft` field): spent then exceeds the
-- budget by it, and budget + overdraft = remaining + reserved + spent still holds.
-- A tick with no usable reservation (never reserved, e.g. a lost reserve and submit, or released
-- because its submit was lost) is an unreserved settle: every cost is charged that way, and the
-- record says `unreserved` = 1.
-- A reservation the sweeper charged at its full grant takes a later settle's costs above what it
-- charged (a platform that overshot the grant); otherwise a settled tick is a replay.
--
-- Returns {replay, remaining, returned, extra, overdrawn, unreserved, platform_1, cost_1, ...}: over
-- the record's platforms in grant order, then those charged without a grant. `returned` went back
-- to remaining, `extra` is the record's charge beyond its grants, `overdrawn` what this call added
-- to the overdraft. replay is 1 when the tick was already settled and nothing was written: the
-- first result comes back, the costs of this call are ignored.
-- Refusals (error reply, nothing written): "LEDGER bad_input ...", "LEDGER no_budget ...",
-- "LEDGER compacted ..." (the tick is at or below the watermark: it was closed and compacted, so
-- this is a repeat of something done), "LEDGER corrupt ...".

local tick = amount(ARGV[1], 'tick')
if #ARGV % 2 ~= 1 then
    fail('bad_input', 'costs: expected platform, cost pairs')
end
local costs, named = {}, {}
for i = 2, #ARGV, 2 do
    local platform = ARGV[i]
    if #platform > 64 or not string.match(platform, '^[%w][%w_.%-]*$') then
        fail('bad_input', 'costs: platform id ' .. string.format('%q', platform) .. ' is not a valid id')
    end
    if costs[platform] then
        fail('bad_input', 'costs.' .. platform .. ': platform given twice')
    end
    costs[platform] = amount(ARGV[i + 1], 'costs.' .. platform)
    named[#named + 1] = platform
end

local record = redis.call('HMGET', KEYS[2], 'state', 'platforms', 'granted', 'returned', 'charged_by', 'extra',
    'unreserved')
local state = record[1]
if not state then
    check_watermark(KEYS[5], tick)
elseif state ~= 'open' and state ~= 'submitted' and state ~= 'settled' and state ~= 'released' then
    fail('corrupt', 'the reservation has an unknown state ' .. string.format('%q', state))
end

local balance = redis.call('HMGET', KEYS[1], 'remaining', 'reserved', 'spent', 'overdraft')
if not balance[1] then
    fail('no_budget', 'no budget was opened for this campaign')
end
local remaining, reserved = tonumber(balance[1]), tonumber(balance[2])
local spent_total, overdraft = tonumber(balance[3]), tonumber(balance[4] or '0')

-- The record's platforms in grant order, then those it does not name, in the order given.
local platforms, known = {}, {}
for platform in string.gmatch(record[2] or '', '[^,]+') do
    platforms[#platforms + 1] = platform
    known[platform] = true
end
local own = #platforms
for _, platform in ipairs(named) do
    if not known[platform] then
        platforms[#platforms + 1] = platform
        known[platform] = true
    end
end

local entries = {} -- stream entries to add: kind, platform, amount
local overdrawn = 0
-- Charge `extra` beyond any grant: out of remaining while it lasts, the rest as overdraft.
local function beyond(platform, extra)
    local take = math.min(extra, remaining)
    remaining = remaining - take
    spent_total = spent_total + extra
    if take > 0 then
        entries[#entries + 1] = { 'charge', platform, take }
    end
    if extra > take then
        overdraft = overdraft + extra - take
        overdrawn = overdrawn + extra - take
        entries[#entries + 1] = { 'overdraft', platform, extra - take }
    end
end

local function write(fields)
    redis.call('HSET', KEYS[1], 'remaining', fmt(remaining), 'reserved', fmt(reserved), 'spent', fmt(spent_total),
        'overdraft', fmt(overdraft))
    redis.call('HSET', KEYS[2], unpack(fields))
    for _, e in ipairs(entries) do
        redis.call('XADD', KEYS[4], '*', 'kind', e[1], 'tick', fmt(tick), 'platform', e[2], 'amount', fmt(e[3]))
    end
end

local function reply(replay, returned, extra, unreserved, charged)
    local out = { replay, remaining, returned, extra, overdrawn, unreserved }
    for i, platform in ipairs(platforms) do
        out[#out + 1] = platform
        out[#out + 1] = charged[i]
    end
    return out
end

if state == 'settled' then
    local recorded = per_platform(KEYS[2], 'c:', platforms)
    local charged, extra, added = {}, tonumber(record[6] or '0'), 0
    local fields = { 'platforms', table.concat(platforms, ',') }
    for i, platform in ipairs(platforms) do
        charged[i] = tonumber(recorded[i] or '0')
        local asked = costs[platform] or 0
        -- Only a charge the sweeper made up (every grant) may have been below what the bids cost.
        if record[5] == 'sweeper' and asked > charged[i] then
            beyond(platform, asked - charged[i])
            added = added + asked - charged[i]
            charged[i] = asked
            fields[#fields + 1] = 'c:' .. platform
            fields[#fields + 1] = fmt(asked)
        end
    end
    if added == 0 then
        -- A replay: the first result, over the record's own platforms only.
        for i = #platforms, own + 1, -1 do
            platforms[i] = nil
        end
        return reply(1, tonumber(record[4]), extra, tonumber(record[7] or '0'), charged)
    end
    local spent = 0
    for _, c in ipairs(charged) do
        spent = spent + c
    end
    fields[#fields + 1] = 'spent'
    fields[#fields + 1] = fmt(spent)
    fields[#fields + 1] = 'extra'
    fields[#fields + 1] = fmt(extra + added)
    write(fields)
    return reply(0, tonumber(record[4]), extra + added, tonumber(record[7] or '0'), charged)
end

-- A reservation still holding its grant covers its costs up to each grant; otherwise nothing does.
local holding = state == 'open' or state == 'submitted'
local grants = {}
if holding then
    local granted_total = tonumber(record[3])
    if reserved < granted_total then
        fail('corrupt', 'budget holds ' .. fmt(reserved) .. ' reserved, less than the '
            .. fmt(granted_total) .. ' this reservation granted')
    end
    reserved = reserved - granted_total
    for i, granted in ipairs(per_platform(KEYS[2], 'g:', platforms)) do
        grants[i] = tonumber(granted or '0')
    end
end

local fields = { 'state', 'settled', 'platforms', table.concat(platforms, ',') }
local charged, spent, returned, extra = {}, 0, 0, 0
for i, platform in ipairs(platforms) do
    local cost = costs[platform] or 0
    local granted = holding and grants[i] or 0
    local covered = math.min(cost, granted)
    charged[i] = cost
    spent = spent + cost
    returned = returned + granted - covered
    extra = extra + cost - covered
    spent_total = spent_total + covered
    remaining = remaining + granted - covered
    if covered > 0 then
        entries[#entries + 1] = { 'settle', platform, covered }
    end
    if granted > covered then
        entries[#entries + 1] = { 'release', platform, granted - covered }
    end
    fields[#fields + 1] = 'c:' .. platform
    fields[#fields + 1] = fmt(cost)
end
for i, platform in ipairs(platforms) do
    local granted = holding and grants[i] or 0
    if charged[i] > granted then
        beyond(platform, charged[i] - granted)
    end
end
local unreserved = holding and 0 or 1
fields[#fields + 1] = 'spent'
fields[#fields + 1] = fmt(spent)
fields[#fields + 1] = 'returned'
fields[#fields + 1] = fmt(returned)
fields[#fields + 1] = 'extra'
fields[#fields + 1] = fmt(extra)
if not state then
    -- A record below the flight's start: the first compaction must begin at it (compaction.py).
    local low = redis.call('HMGET', KEYS[5], 'watermark', 'first')
    if not low[1] and (not low[2] or tick < tonumber(low[2])) then
        redis.call('HSET', KEYS[5], 'first', fmt(tick))
    end
    fields[#fields + 1] = 'tick'
    fields[#fields + 1] = fmt(tick)
    fields[#fields + 1] = 'granted'
    fields[#fields + 1] = '0'
end
if unreserved == 1 then
    fields[#fields + 1] = 'unreserved'
    fields[#fields + 1] = '1'
end
write(fields)
if holding then
    redis.call('ZREM', KEYS[3], fmt(tick))
end
return reply(0, returned, extra, unreserved, charged)
