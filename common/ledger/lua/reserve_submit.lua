-- reserve_submit: reserve.lua then submit.lua for one (campaign, tick), in one call.
--
-- KEYS[1]  {c:<id>}:campaign    as reserve.lua
-- KEYS[2]  {c:<id>}:budget      as reserve.lua (submit.lua's KEYS[1])
-- KEYS[3]  {c:<id>}:res:<tick>  as reserve.lua (submit.lua's KEYS[2])
-- KEYS[4]  {c:<id>}:open        as reserve.lua
-- KEYS[5]  {c:<id>}:ledger      as reserve.lua
-- KEYS[6]  {c:<id>}:history     as reserve.lua (submit.lua's KEYS[3])
-- ARGV[1]  tick, and ARGV[2..] the platform, cap pairs: as reserve.lua
--
-- Returns what submit.lua returns; a refusal of reserve.lua is the reply as it is (nothing was
-- submitted). For a caller that bids right after reserving, with nothing in between: the same two
-- scripts it would send one after the other, in one call instead of two per campaign and tick.
-- scripts.py puts the text of reserve.lua and of submit.lua before this as the local functions
-- `reserve` and `submit`, each given its own KEYS and ARGV.

reserve(KEYS, ARGV)
return submit({ KEYS[2], KEYS[3], KEYS[6] }, { ARGV[1] })
