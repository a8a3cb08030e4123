-- reserve: hold budget for one campaign's bids of one tick, once per (campaign, tick).
--
-- KEYS[1]  {c:<id>}:campaign    hash written by the campaign store: status, start_tick, end_tick
-- KEYS[2]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent
-- KEYS[3]  {c:<id>}:res:<tick>  this tick's reservation record
-- KEYS[4]  {c:<id>}:open        sorted set of unsettled (open or submitted) reservation ticks
--                               (score = tick)
-- KEYS[5]  {c:<id>}:ledger      stream of money movements
-- KEYS[6]  {c:<id>}:history     compacted history; its `watermark` is read
-- ARGV[1]  tick, an integer >= 0
-- ARGV[2], ARGV[3], ...  platform, cap pairs (cap in micro-units >= 0), in the order to fill
--
-- Returns {replay, state, remaining, platform_1, granted_1, platform_2, granted_2, ...}.
-- replay is 0 when this call made the grant (state "open"). When the tick was already reserved,
-- replay is 1: the first grant comes back as it was, with the reservation's current state (open,
-- submitted, settled or released) and the current remaining; the caps of this call are ignored and
-- nothing is written.
-- Refusals (error reply, nothing written): "LEDGER bad_input <field>: <reason>",
-- "LEDGER no_budget ...", "LEDGER not_reservable ...", "LEDGER bad_campaign ...",
-- "LEDGER compacted ..." (a tick at or below the watermark: closed and compacted, never reserved again).
--
-- Grants may be partial: platforms are filled in the order given, each with min(cap, what is
-- left). All-or-nothing would strand a campaign's last micro-units (once remaining is below every
-- cap nothing fits any more), so the budget could never be spent down and the campaign would
-- never finish. The caller lists platforms best first, so the best one is filled when money is short.

local tick = amount(ARGV[1], 'tick')
if #ARGV < 3 or #ARGV % 2 ~= 1 then
    fail('bad_input', 'caps: give at least one platform, cap pair')
end
local platforms, caps, seen = {}, {}, {}
for i = 2, #ARGV, 2 do
    local platform = ARGV[i]
    if #platform > 64 or not string.match(platform, '^[%w][%w_.%-]*$') then
        fail('bad_input', 'caps: platform id ' .. string.format('%q', platform) .. ' is not a valid id')
    end
    if seen[platform] then
        fail('bad_input', 'caps.' .. platform .. ': platform given twice')
    end
    seen[platform] = true
    platforms[#platforms + 1] = platform
    caps[#caps + 1] = amount(ARGV[i + 1], 'caps.' .. platform)
end

local record = redis.call('HMGET', KEYS[3], 'state', 'platforms')
if record[1] then
    local first = {}
    for platform in string.gmatch(record[2], '[^,]+') do
        first[#first + 1] = platform
    end
    local granted = per_platform(KEYS[3], 'g:', first)
    -- A settle may have charged platforms beyond the grant's (listed, without a grant): the grant
    -- comes back as it was made. A record an unreserved settle wrote has no grant at all: its
    -- platforms come back at 0.
    local any = false
    for i = 1, #first do
        any = any or granted[i] ~= false and granted[i] ~= nil
    end
    local out = { 1, record[1], tonumber(redis.call('HGET', KEYS[2], 'remaining') or '0') }
    for i, platform in ipairs(first) do
        local g = granted[i]
        if g ~= false and g ~= nil then
            out[#out + 1] = platform
            out[#out + 1] = tonumber(g)
        elseif not any then
            out[#out + 1] = platform
            out[#out + 1] = 0
        end
    end
    return out
end
check_watermark(KEYS[6], tick)

local campaign = redis.call('HMGET', KEYS[1], 'status', 'start_tick', 'end_tick')
if not campaign[1] then
    fail('not_reservable', 'unknown campaign (no campaign record)')
end
if campaign[1] ~= 'active' then
    fail('not_reservable', 'campaign is ' .. campaign[1] .. ', not active')
end
if campaign[2] and campaign[2] ~= '' then
    local start = tonumber(campaign[2])
    if not start then
        fail('bad_campaign', 'start_tick ' .. string.format('%q', campaign[2]) .. ' is not a number')
    end
    if tick < start then
        fail('not_reservable', 'tick ' .. fmt(tick) .. ' is before the flight starts (start_tick ' .. campaign[2] .. ')')
    end
end
if campaign[3] and campaign[3] ~= '' then
    local stop = tonumber(campaign[3])
    if not stop then
        fail('bad_campaign', 'end_tick ' .. string.format('%q', campaign[3]) .. ' is not a number')
    end
    if tick >= stop then
        fail('not_reservable', 'tick ' .. fmt(tick) .. ' is past the flight (end_tick ' .. campaign[3] .. ')')
    end
end

local balance = redis.call('HMGET', KEYS[2], 'remaining', 'reserved')
if not balance[1] then
    fail('no_budget', 'no budget was opened for this campaign')
end
local left = tonumber(balance[1])
local reserved = tonumber(balance[2])

local out = { 0, 'open', 0 }
local fields = { 'state', 'open', 'tick', fmt(tick), 'platforms', table.concat(platforms, ',') }
local grants = {}
local total = 0
for i, platform in ipairs(platforms) do
    local granted = math.min(caps[i], left)
    left = left - granted
    total = total + granted
    grants[i] = granted
    out[#out + 1] = platform
    out[#out + 1] = granted
    fields[#fields + 1] = 'g:' .. platform
    fields[#fields + 1] = fmt(granted)
end
fields[#fields + 1] = 'granted'
fields[#fields + 1] = fmt(total)
out[3] = left

redis.call('HSET', KEYS[2], 'remaining', fmt(left), 'reserved', fmt(reserved + total))
redis.call('HSET', KEYS[3], unpack(fields))
redis.call('ZADD', KEYS[4], fmt(tick), fmt(tick))
for i, platform in ipairs(platforms) do
    if grants[i] > 0 then
        redis.call('XADD', KEYS[5], '*', 'kind', 'reserve', 'tick', fmt(tick), 'platform', platform,
            'amount', fmt(grants[i]))
    end
end
return out
