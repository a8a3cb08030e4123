-- compact: fold a campaign's closed history below a tick into totals, and raise its watermark there.
--
-- KEYS[1]  {c:<id>}:open        sorted set of unsettled (open or submitted) reservation ticks
-- KEYS[2]  {c:<id>}:ledger      stream of money movements
-- KEYS[3]  {c:<id>}:history     hash: `watermark`, the folded totals per entry kind, `spent:<platform>`,
--                               `records` (records removed) and `entries` (stream entries folded)
-- KEYS[4..n]  {c:<id>}:res:<from>, {c:<id>}:res:<from + 1>, ...: the records that may go, in tick order
-- ARGV[1]  from: the watermark + 1 (any tick when the campaign has no watermark yet, the first one
--          that may hold a record)
-- ARGV[2]  upto: the highest tick that may be compacted (the caller keeps the recent ticks in detail)
-- ARGV[3]  the most stream entries to fold in this call
--
-- The new watermark is the lowest of upto, the last tick whose record came in KEYS, and the tick
-- before the oldest unsettled reservation: every reservation at or below it is closed, so its record
-- is deleted, and reserve, submit and settle refuse those ticks from now on (prelude's
-- check_watermark); release finds nothing to release. Then stream entries are folded from the
-- stream's start into the totals and trimmed, up to the first entry of a tick above the watermark:
-- every entry of a tick above the watermark stays in the stream, so the reservation records left
-- can still be checked against their entries, and the totals plus the stream still add up to the
-- budget's figures (common/ledger/audit.py).
--
-- Returns {outcome, watermark, records removed, entries folded}; outcome "moved" when the watermark
-- is no longer ARGV[1] - 1 (another compaction ran first: nothing done, call again), else
-- "compacted". watermark is -1 while the campaign has none.

local from = amount(ARGV[1], 'from')
local upto = amount(ARGV[2], 'upto')
local limit = amount(ARGV[3], 'limit')

local mark = redis.call('HGET', KEYS[3], 'watermark')
if mark and tonumber(mark) + 1 ~= from then
    return { 'moved', tonumber(mark), 0, 0 }
end
local to = math.min(upto, from + #KEYS - 4)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #oldest > 0 and tonumber(oldest[2]) <= to then
    to = tonumber(oldest[2]) - 1
end
local watermark = mark and tonumber(mark) or nil
local removed = 0
if to >= from then
    for i = 0, to - from do
        removed = removed + redis.call('DEL', KEYS[4 + i])
    end
    redis.call('HSET', KEYS[3], 'watermark', fmt(to))
    redis.call('HINCRBY', KEYS[3], 'records', fmt(removed))
    watermark = to
end
if not watermark then
    return { 'compacted', -1, 0, 0 }
end

local sums, folded, last = {}, 0, nil
for _, entry in ipairs(redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', limit)) do
    local f = {}
    for j = 1, #entry[2], 2 do
        f[entry[2][j]] = entry[2][j + 1]
    end
    if f.tick ~= '' and tonumber(f.tick) > watermark then
        break
    end
    local value = tonumber(f.amount)
    sums[f.kind] = (sums[f.kind] or 0) + value
    if f.kind == 'settle' or f.kind == 'charge' or f.kind == 'overdraft' then
        local field = 'spent:' .. f.platform
        sums[field] = (sums[field] or 0) + value
    end
    folded = folded + 1
    last = entry[1]
end
if last then
    for field, value in pairs(sums) do
        redis.call('HINCRBY', KEYS[3], field, fmt(value))
    end
    redis.call('HINCRBY', KEYS[3], 'entries', fmt(folded))
    local ms, seq = string.match(last, '^(%d+)-(%d+)$')
    redis.call('XTRIM', KEYS[2], 'MINID', ms .. '-' .. fmt(tonumber(seq) + 1))
end
return { 'compacted', watermark, removed, folded }
