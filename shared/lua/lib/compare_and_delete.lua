-- compare_and_delete(key, value): delete `key` only while it holds `value`, so a run
-- releases its own delivery claim and never one another run took after it expired.
-- Returns 1 when deleted, else 0. Put in the header of each script that calls it
-- (shared/lua_scripts.py): worker/lua/release_claim.lua, shared/lua/update.lua.
local function compare_and_delete(key, value)
  if redis.call('GET', key) == value then
    return redis.call('DEL', key)
  end
  return 0
end
