-- add_recent(key, id, score, retention): put handover `id` in the recent index `key`
-- (shared/redis_keys.py, RECENT_INDEX) at `score` (when it was queued, Unix seconds),
-- and drop up to RECENT_PRUNE of the oldest entries queued more than `retention`
-- seconds before it: their records have expired. Two out for each one in keeps the
-- index at one retention's worth in O(log N) a call, never a long run of removals.
-- Put in the header of each script that calls it (shared/lua_scripts.py):
-- shared/lua/enqueue.lua, voice_handoff.lua, replay.lua.
local function add_recent(key, id, score, retention)
  redis.call('ZADD', key, score, id)
  local stale = redis.call('ZRANGEBYSCORE', key, '-inf', '(' .. (tonumber(score) - retention),
                           'LIMIT', 0, RECENT_PRUNE)
  if #stale > 0 then redis.call('ZREM', key, unpack(stale)) end
end
