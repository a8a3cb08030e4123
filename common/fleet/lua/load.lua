-- load: mark one (campaign, tick) as taken by a delivery and read what its evaluation needs.
--
-- KEYS[1]  {c:<id>}:eval:<t>  the evaluation's mark (string: the token of the delivery that took it)
-- KEYS[2]  {c:<id>}:campaign  hash: spec (JSON) and status
-- KEYS[3]  {c:<id>}:budget    hash of micro-units, read as common.ledger.Balance
-- KEYS[4]  {c:<id>}:state     hash: outcomes so far and the last decision (common/fleet/state.py)
-- ARGV[1]  the delivery's token
-- ARGV[2]  seconds the mark lives
-- ARGV[3..] the budget fields to read, in Balance.FIELDS order
--
-- Returns {mark} when the mark holds another delivery's token (nothing else is read), else
-- {mark, campaign, budget, state}: the campaign and state hashes as flat field/value lists, the
-- budget as the values of ARGV[3..]. A key of the wrong type (damaged data) comes back as an error
-- in its own place, so that one damaged key costs its campaign, not the script.
--
-- SET NX EX, GET, HGETALL, HMGET, HGETALL in one call: one command for the client to pack and parse
-- instead of five, the client's largest cost per command (docs/scaling.md).

redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2])
local mark = redis.call('GET', KEYS[1])
if mark ~= ARGV[1] and mark ~= ARGV[1] .. ':recorded' then
    return {mark}
end
return {
    mark,
    redis.pcall('HGETALL', KEYS[2]),
    redis.pcall('HMGET', KEYS[3], unpack(ARGV, 3)),
    redis.pcall('HGETALL', KEYS[4]),
}
