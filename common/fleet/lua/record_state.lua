-- record_state: apply one evaluation's outcomes and decision to a campaign's state, once per (campaign, tick).
--
-- KEYS[1]  {c:<id>}:state     hash: outcomes so far (spend, clicks, conversions, value) and the last
--                             decision's fields (pacing, lam, planned, last_tick, reason)
-- KEYS[2]  {c:<id>}:eval:<t>  the evaluation's mark, holding the token of the delivery that took it
-- ARGV[1]  the delivery's token
-- ARGV[2]  tick
-- ARGV[3..6] spend, clicks, conversions, value of the tick's bids (added to the outcomes)
-- ARGV[7..] the decision's fields and values (set, unless the state holds a later tick's decision)
--
-- Returns 1 when applied; 0 when this delivery had applied it already (a client retry: nothing is
-- written); -1 when the mark is not this delivery's (nothing is written). Applying rewrites the mark to
-- "<token>:recorded", keeping its expiry, which is what makes a repeat recognisable.

local mark = redis.call('GET', KEYS[2])
if mark == ARGV[1] .. ':recorded' then
    return 0
end
if mark ~= ARGV[1] then
    return -1
end
local names = {'spend', 'clicks', 'conversions', 'value'}
for i = 1, 4 do
    if tonumber(ARGV[2 + i]) ~= 0 then
        redis.call('HINCRBYFLOAT', KEYS[1], names[i], ARGV[2 + i])
    end
end
if #ARGV > 6 then
    local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick'))
    if last == nil or tonumber(ARGV[2]) >= last then
        redis.call('HSET', KEYS[1], unpack(ARGV, 7))
    end
end
redis.call('SET', KEYS[2], ARGV[1] .. ':recorded', 'KEEPTTL')
return 1
