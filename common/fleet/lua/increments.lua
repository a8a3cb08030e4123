-- increments: a group's additions to one hash of counters, in one call instead of one command each.
--
-- KEYS[1]  the hash (a tick's counters, ce:metrics)
-- ARGV     field, kind, amount triples, applied in order: kind "i" by HINCRBY, "f" by HINCRBYFLOAT,
--          each amount exactly as the client would have sent it on its own
--
-- Returns how many were applied. The amounts are the client's strings, so the hash ends up holding
-- what the same commands sent one by one would have left in it.

local applied = 0
for i = 1, #ARGV, 3 do
    if ARGV[i + 1] == 'f' then
        redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 2])
    else
        redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 2])
    end
    applied = applied + 1
end
return applied
