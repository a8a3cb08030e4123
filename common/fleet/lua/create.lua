-- create: store a new campaign with its budget, all or nothing.
--
-- KEYS[1]  {c:<id>}:campaign   hash: spec, start_tick, end_tick, status
-- KEYS[2]  {c:<id>}:budget     hash of micro-units: budget, remaining, reserved, spent
-- KEYS[3]  {c:<id>}:ledger     stream of money movements
-- KEYS[4]  ce:campaigns                  } the fleet-wide indexes, given on a single server only:
-- KEYS[5]  ce:campaigns:active           } on a Redis Cluster they live in other hash slots, and the
-- KEYS[6]  ce:campaigns:active:start     } store adds the campaign to them right after this script
-- KEYS[7]  ce:campaigns:active:end       }
-- ARGV[1]  campaign id
-- ARGV[2]  budget in micro-units, an integer > 0
-- ARGV[3]  spec (JSON)
-- ARGV[4]  start tick
-- ARGV[5]  end tick ('' for none)
--
-- Returns 1 when the campaign was created (active, its budget opened with an `adjust` entry as
-- open.lua writes it), 0 when a campaign or a budget with this id exists: nothing is written then.
-- Refusal (error reply, nothing written): "LEDGER bad_input <field>: <reason>".

local id = ARGV[1]
local budget = amount(ARGV[2], 'budget')
if budget <= 0 then
    fail('bad_input', 'budget: must be > 0 micro-units')
end
local start = amount(ARGV[4], 'start_tick')
local finish = ARGV[5]
if finish ~= '' then
    amount(finish, 'end_tick')
end

if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
    return 0
end

redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'start_tick', ARGV[4], 'end_tick', finish, 'status', 'active')
redis.call('HSET', KEYS[2], 'budget', fmt(budget), 'remaining', fmt(budget), 'reserved', '0', 'spent', '0')
redis.call('XADD', KEYS[3], '*', 'kind', 'adjust', 'tick', '', 'platform', '', 'amount', fmt(budget), 'op', 'open')
if #KEYS == 7 then
    redis.call('SADD', KEYS[4], id)
    redis.call('SADD', KEYS[5], id)
    redis.call('ZADD', KEYS[6], start, id)
    redis.call('ZADD', KEYS[7], finish == '' and 'inf' or finish, id)
end
return 1
