-- The start of a run, in one step (shared/store.py, HandoverStore.begin_run; see
-- worker/claim.py): read the record; unless it is missing or final, take the
-- conversation's delivery claim (SET NX PX); holding it, mark the record running and
-- read it back. A final record whose Conversation steps are still due (`aftercare`
-- pending: a run was stopped between its final write and their end,
-- worker/aftercare.py) takes the claim too, and is read back as it is.
-- The caller names the claim after the conversation the job carries
-- (or, for a job without it, the one it read from the record); a record of another
-- conversation takes no claim and writes nothing.
-- KEYS: 1 the record, 2 the claim of ARGV[1]'s conversation.
-- ARGV: 1 that conversation's SID, 2 the claim's value, 3 claim TTL (ms), 4 now (s).
-- Returns {0} missing, {1, state} final, {2, holder's value or ''} claim busy,
-- {3, field, value, ...} held: the record after it was marked running,
-- {4, the record's conversation SID} another conversation: nothing taken,
-- {5, field, value, ...} final with its steps due, claim held: the record.
local found = redis.call('HMGET', KEYS[1], 'conversation_sid', 'state', 'aftercare')
if not found[1] then return {0} end
local steps_due = FINAL[found[2]] and found[3] == 'pending'
if FINAL[found[2]] and not steps_due then return {1, found[2]} end
if found[1] ~= ARGV[1] then return {4, found[1]} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {2, redis.call('GET', KEYS[2]) or ''}
end
if steps_due then
  local record = redis.call('HGETALL', KEYS[1])
  table.insert(record, 1, 5)
  return record
end
redis.call('HDEL', KEYS[1], 'next_attempt_at')
redis.call('HSET', KEYS[1], 'state', STATE.RUNNING, 'updated_at', ARGV[4])
local record = redis.call('HGETALL', KEYS[1])
table.insert(record, 1, 3)
return record
