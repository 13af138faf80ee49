-- Store new handovers, or answer their conversations' live ones (shared/connections.py,
-- Enqueuer.enqueue): for each call of a batch, in order, de-duplicate, check and count
-- the rate limits, check the backlog, write the status record, the arq job record, the
-- queue entry and the recent index's entry. One script run takes every call a
-- receiver has waiting (shared/script_batcher.py, looped): one EVALSHA for Redis to
-- parse and start, not one per call. Each call's checks come before its writes, and a
-- call refused writes nothing, so each call is all-or-nothing as its own run was.
-- One key is built here, not passed: the status record of the handover the
-- conversation's pointer names (HANDOVER_KEY_PREFIX .. the pointer's value, the
-- prefix put in the header by shared/lua_scripts.py). Passing it in KEYS means
-- reading the pointer first and checking it here: a second round trip on every
-- repeat call, on the tool endpoint's path. It carries the keys' hash tag
-- (shared/redis_keys.py), so in Redis Cluster it is in the slot of KEYS.
-- Each call's KEYS and ARGV follow the previous call's: KEYS_PER_CALL keys, ARGS_PER_CALL
-- arguments (numbered from 1 below, from the call's own start in the script).
-- KEYS: 1 the conversation pointer, 2 the new status record, 3 the arq job record,
--       4 the arq queue, 5 the per-conversation rate counter, 6 the per-identity rate
--       counter, 7 the recent index (RECENT_INDEX).
-- ARGV: 1 handover id (its job id: HANDOVER_JOB_PREFIX .. it), 2 job bytes, 3 queue score (ms), 4 now (s), 5 the status
--       record's fields as a JSON object of strings, 6 '1' to store nothing new (a
--       target outside its business hours that declines: only the live or recent
--       handover is answered).
-- Constants (shared/lua_scripts.py, from the settings): DEDUP_WINDOW (s),
-- LIMIT_CONVERSATION, LIMIT_IDENTITY, RATE_WINDOW (s), MAX_PENDING, RECORD_TTL (s),
-- POINTER_TTL (s), JOB_TTL_MS, RECENT_RETENTION (s), KEYS_PER_CALL, ARGS_PER_CALL.
-- Returns a list, an answer per call: {1, id, STATE.QUEUED} (stored), {0, id, state}
-- (the live or recent handover: recent = succeeded within DEDUP_WINDOW, its task not ended),
-- {2, 'conversation'|'identity', ms left in the window} (rate limited, nothing
-- stored), {3, 'backlog', live handovers} (MAX_PENDING reached, nothing stored) or
-- {4, 'declined', 0} (ARGV[6], no live or recent handover: nothing stored).
local limits = {LIMIT_CONVERSATION, LIMIT_IDENTITY}

-- One call: KEYS[k + 1] .. KEYS[k + KEYS_PER_CALL], ARGV[a + 1] .. ARGV[a + ARGS_PER_CALL].
local function enqueue(k, a)
  local existing = redis.call('GET', KEYS[k + 1])
  if existing then
    local current = redis.call('HMGET', HANDOVER_KEY_PREFIX .. existing,
                               'state', 'finished_at', 'ended_at')
    local state = current[1]
    if LIVE[state] then
      return {0, existing, state}
    end
    -- A succeeded handover whose task has ended (`ended_at`, shared/lua/hand_back.lua)
    -- answers nothing: the agent gave the customer back, and asking again is a new
    -- request for a person.
    if state == STATE.SUCCEEDED and not current[3]
       and tonumber(ARGV[a + 4]) - tonumber(current[2] or '0') < DEDUP_WINDOW then
      return {0, existing, state}
    end
  end
  if ARGV[a + 6] == '1' then
    return {4, 'declined', 0}
  end
  local limited, wait = nil, 0
  for i = 1, 2 do
    if limits[i] > 0 and tonumber(redis.call('GET', KEYS[k + 4 + i]) or '0') >= limits[i] then
      local left = redis.call('PTTL', KEYS[k + 4 + i])
      if left < 0 then
        redis.call('EXPIRE', KEYS[k + 4 + i], RATE_WINDOW)
        left = RATE_WINDOW * 1000
      end
      if left > wait then
        limited, wait = (i == 1) and 'conversation' or 'identity', left
      end
    end
  end
  if limited then
    return {2, limited, wait}
  end
  if MAX_PENDING > 0 then
    local pending = redis.call('ZCARD', KEYS[k + 4])
    if pending >= MAX_PENDING then
      return {3, 'backlog', pending}
    end
  end
  for i = 1, 2 do
    if limits[i] > 0 and redis.call('INCR', KEYS[k + 4 + i]) == 1 then
      redis.call('EXPIRE', KEYS[k + 4 + i], RATE_WINDOW)
    end
  end
  local fields = {}
  for name, value in pairs(cjson.decode(ARGV[a + 5])) do
    fields[#fields + 1] = name
    fields[#fields + 1] = value
  end
  redis.call('HSET', KEYS[k + 2], unpack(fields))
  redis.call('EXPIRE', KEYS[k + 2], RECORD_TTL)
  redis.call('SET', KEYS[k + 1], ARGV[a + 1], 'EX', POINTER_TTL)
  redis.call('PSETEX', KEYS[k + 3], JOB_TTL_MS, ARGV[a + 2])
  redis.call('ZADD', KEYS[k + 4], ARGV[a + 3], HANDOVER_JOB_PREFIX .. ARGV[a + 1])
  add_recent(KEYS[k + 7], ARGV[a + 1], ARGV[a + 4], RECENT_RETENTION)
  return {1, ARGV[a + 1], STATE.QUEUED}
end

local answers = {}
for call = 0, #KEYS / KEYS_PER_CALL - 1 do
  answers[call + 1] = enqueue(call * KEYS_PER_CALL, call * ARGS_PER_CALL)
end
return answers
