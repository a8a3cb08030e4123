-- adjust: an operator raises or lowers a campaign's budget, once per operation id.
--
-- KEYS[1]  {c:<id>}:budget   hash of micro-units: budget, remaining, reserved, spent, overdraft
-- KEYS[2]  {c:<id>}:ledger   stream of money movements
-- KEYS[3]  {c:<id>}:adjust   hash: operation id -> delta it applied
-- ARGV[1]  delta in micro-units, a non-zero integer (negative lowers the budget)
-- ARGV[2]  operation id: a retried call (same id) must not apply the delta twice
--
-- Returns {replay, budget, remaining, reserved, spent, overdraft}. replay is 1 when this operation id was
-- already applied: nothing is written and the current figures come back.
-- Refusals (error reply, nothing written): "LEDGER bad_input ...", "LEDGER no_budget ...",
-- "LEDGER below_committed ..." (lowering below spent + reserved), "LEDGER too_large ...",
-- "LEDGER op_reused ..." (the id was applied with another delta).

local raw = ARGV[1]
if type(raw) ~= 'string' or #raw > 17 or not string.match(raw, '^%-?%d+$') then
    fail('bad_input', 'delta: must be an integer of micro-units, got ' .. tostring(raw))
end
local delta = tonumber(raw)
if delta == 0 or math.abs(delta) > MAX then
    fail('bad_input', 'delta: must be non-zero and at most ' .. fmt(MAX) .. ' in size, got ' .. raw)
end
local op = ARGV[2]
if type(op) ~= 'string' or op == '' or #op > 64 then
    fail('bad_input', 'op_id: must be 1-64 characters')
end

local balance = redis.call('HMGET', KEYS[1], 'budget', 'remaining', 'reserved', 'spent', 'overdraft')
if not balance[1] then
    fail('no_budget', 'no budget was opened for this campaign')
end
local budget, remaining = tonumber(balance[1]), tonumber(balance[2])
local reserved, spent, overdraft = tonumber(balance[3]), tonumber(balance[4]), tonumber(balance[5] or '0')

local applied = redis.call('HGET', KEYS[3], op)
if applied then
    if tonumber(applied) ~= delta then
        fail('op_reused', 'op_id ' .. op .. ' already applied a delta of ' .. applied .. ', not ' .. raw)
    end
    return { 1, budget, remaining, reserved, spent, overdraft }
end

if remaining + delta < 0 then
    fail('below_committed', 'lowering the budget by ' .. fmt(-delta) .. ' would put it below spent + reserved ('
        .. fmt(spent) .. ' + ' .. fmt(reserved) .. '); at most ' .. fmt(remaining) .. ' can be taken off')
end
if budget + delta > MAX then
    fail('too_large', 'the budget would exceed ' .. fmt(MAX) .. ' micro-units')
end

budget = budget + delta
remaining = remaining + delta
redis.call('HSET', KEYS[1], 'budget', fmt(budget), 'remaining', fmt(remaining))
redis.call('HSET', KEYS[3], op, fmt(delta))
redis.call('XADD', KEYS[2], '*', 'kind', 'adjust', 'tick', '', 'platform', '', 'amount', fmt(delta), 'op', op)
return { 0, budget, remaining, reserved, spent, overdraft }
