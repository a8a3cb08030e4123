-- open: give a campaign its budget, once.
--
-- KEYS[1]  {c:<id>}:budget   hash of micro-units: budget, remaining, reserved, spent, overdraft
-- KEYS[2]  {c:<id>}:ledger   stream of money movements
-- ARGV[1]  budget in micro-units, an integer > 0
--
-- Returns {created, budget, remaining, reserved, spent, overdraft}. created is 1 when this call made the
-- budget and wrote its `adjust` entry; 0 when the budget already existed, in which case nothing
-- was written and the current figures come back (a second open never changes a budget: adjust does).
-- Refusal (error reply, nothing written): "LEDGER bad_input <field>: <reason>".

local raw = ARGV[1]
if type(raw) ~= 'string' or #raw > 16 or not string.match(raw, '^%d+$') then
    fail('bad_input', 'budget: must be an integer of micro-units, got ' .. tostring(raw))
end
local budget = tonumber(raw)
if budget <= 0 or budget > MAX then
    fail('bad_input', 'budget: must be > 0 and <= ' .. fmt(MAX) .. ' micro-units, got ' .. raw)
end

local current = redis.call('HMGET', KEYS[1], 'budget', 'remaining', 'reserved', 'spent', 'overdraft')
if current[1] then
    return { 0, tonumber(current[1]), tonumber(current[2]), tonumber(current[3]), tonumber(current[4]),
        tonumber(current[5] or '0') }
end

redis.call('HSET', KEYS[1], 'budget', fmt(budget), 'remaining', fmt(budget), 'reserved', '0', 'spent', '0',
    'overdraft', '0')
redis.call('XADD', KEYS[2], '*', 'kind', 'adjust', 'tick', '', 'platform', '', 'amount', fmt(budget), 'op', 'open')
return { 1, budget, budget, 0, 0, 0 }
