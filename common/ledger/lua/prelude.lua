-- prelude: the helpers every ledger script starts with. scripts.py puts this text in front of
-- each script when it registers it (Redis scripts cannot import); it reads no KEYS or ARGV itself.

local MAX = 9007199254740991 -- 2^53 - 1: Lua numbers are doubles, exact up to here

local function fail(code, message)
    error({ err = 'LEDGER ' .. code .. ' ' .. message })
end

local function fmt(n)
    return string.format('%d', n)
end

-- The values of <prefix><platform> fields of a record, one HMGET for all platforms.
local function per_platform(key, prefix, platforms)
    if #platforms == 0 then
        return {}
    end
    local names = {}
    for i, platform in ipairs(platforms) do
        names[i] = prefix .. platform
    end
    return redis.call('HMGET', key, unpack(names))
end

-- A non-negative integer argument (micro-units or a tick), refused with the field's name.
local function amount(raw, field)
    if type(raw) ~= 'string' or #raw > 16 or not string.match(raw, '^%d+$') then
        fail('bad_input', field .. ': must be an integer >= 0, got ' .. tostring(raw))
    end
    local n = tonumber(raw)
    if n > MAX then
        fail('bad_input', field .. ': must be <= ' .. fmt(MAX) .. ', got ' .. raw)
    end
    return n
end

-- Refuse an operation on a tick at or below the campaign's watermark (compact.lua): every
-- reservation there was closed and its record compacted away, so the call repeats something done.
local function check_watermark(history_key, tick)
    local mark = redis.call('HGET', history_key, 'watermark')
    if mark and tick <= tonumber(mark) then
        fail('compacted', 'tick ' .. fmt(tick) .. ' is at or below the watermark ' .. mark
            .. ': it was closed and compacted, nothing is done again')
    end
end
