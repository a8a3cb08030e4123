-- submit: mark one (campaign, tick) reservation as bid on, just before its bids go to the platforms.
--
-- KEYS[1]  {c:<id>}:budget      hash of micro-units: budget, remaining, reserved, spent (read only)
-- KEYS[2]  {c:<id>}:res:<tick>  the tick's reservation record
-- KEYS[3]  {c:<id>}:history     compacted history; its `watermark` is read
-- ARGV[1]  tick, an integer >= 0
--
-- Moves no money and writes no stream entry: it sets the record's state from "open" to "submitted".
-- From then on the grant may have been spent by a platform, so the reservation is never released:
-- it is closed only by settle, or by the sweeper charging every grant in full (release.lua).
-- Returns {replay, state, remaining, platform_1, granted_1, platform_2, granted_2, ...}, the same
-- shape as reserve. replay is 0 when this call moved the state to "submitted"; 1 when an earlier
-- call had (nothing is written; bids must be placed only on the first submit's reply).
-- Refusals (error reply, nothing written; the caller must not bid):
-- "LEDGER bad_input ...", "LEDGER no_reservation ..." (never reserved),
-- "LEDGER released ..." (released by release or the sweeper; its grant is back in remaining),
-- "LEDGER settled ..." (already settled; it holds nothing any more),
-- "LEDGER compacted ..." (at or below the watermark: closed and compacted long ago).

local tick = amount(ARGV[1], 'tick')

local record = redis.call('HMGET', KEYS[2], 'state', 'platforms')
local state = record[1]
if not state then
    check_watermark(KEYS[3], tick)
    fail('no_reservation', 'this tick was never reserved; do not bid')
end
if state == 'released' then
    fail('released', 'the reservation was released (its grant is back in remaining); do not bid')
end
if state == 'settled' then
    fail('settled', 'the reservation is already settled and holds nothing; do not bid')
end

local replay = 1
if state == 'open' then
    redis.call('HSET', KEYS[2], 'state', 'submitted')
    replay = 0
elseif state ~= 'submitted' then
    fail('corrupt', 'the reservation has an unknown state ' .. string.format('%q', state))
end

local platforms = {}
for platform in string.gmatch(record[2], '[^,]+') do
    platforms[#platforms + 1] = platform
end
local out = { replay, 'submitted', tonumber(redis.call('HGET', KEYS[1], 'remaining') or '0') }
for i, granted in ipairs(per_platform(KEYS[2], 'g:', platforms)) do
    out[#out + 1] = platforms[i]
    out[#out + 1] = tonumber(granted)
end
return out
