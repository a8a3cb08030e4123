-- trim_stale: pop, from the consumers' end of a Celery queue on Redis, the evaluations of past ticks.
--
-- KEYS[1]  the queue's list: kombu pushes new messages on the left, workers pop the oldest on the right
-- ARGV[1]  the most messages to pop in this call
-- ARGV[2..] the `expires` headers, exactly as the tick task published them, of ticks whose deadline
--           has passed
--
-- Returns the popped messages, oldest first. Stops at the first message that is not a ce.evaluate
-- whose `expires` is one of ARGV[2..] (a fresh evaluation, a backtest's, any other task): those stay,
-- in their place, for the workers. Atomic, so a worker popping at the same time takes a message
-- either before or after the trim, never one the trim also took.

local stale = {}
for i = 2, #ARGV do
    stale[ARGV[i]] = true
end
local limit = tonumber(ARGV[1])
local popped = {}
while #popped < limit do
    local message = redis.call('LINDEX', KEYS[1], -1)
    if not message then
        break
    end
    local ok, envelope = pcall(cjson.decode, message)
    if not ok or type(envelope) ~= 'table' or type(envelope.headers) ~= 'table' then
        break
    end
    local headers = envelope.headers
    if headers.task ~= 'ce.evaluate' or not stale[headers.expires] then
        break
    end
    redis.call('RPOP', KEYS[1])
    popped[#popped + 1] = message
end
return popped
