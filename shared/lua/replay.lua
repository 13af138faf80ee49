-- Put a failed handover back on the queue, or say why not (shared/deadletters.py,
-- replay): the checks and the writes in one step.
-- KEYS: 1 the status record, 2 the failed index, 3 the arq job record, 4 the arq
--       queue, 5 arq's in-progress key for this job, 6 the recent index (the replayed
--       handover moves to its top: queued again now), then, as the caller read them
--       before the call: 7 the outcome counters of the minute the failure was written
--       in (shared/lua/update.lua), 8 the pointer of the record's conversation
--       (absent if the record was not found), 9 the status record of the handover the
--       pointer named (absent when it named none, or this one).
-- ARGV: 1 handover id (its job id: HANDOVER_JOB_PREFIX .. it), 2 job bytes, 3 queue score (ms), 4 job TTL (ms), 5 record TTL
--       (s), 6 pointer TTL (s), 7 now (s), 8 the record's conversation SID as read
--       ('' if not found), 9 the pointer's value as read ('' for none), 10 the recent
--       index's retention (s), 11 the record's finished_at as read ('' for none).
-- Returns {'replayed', field, value, ...} (the record after the replay),
-- {refusal, detail, detail}, or {'read_again'} when what KEYS[7] to KEYS[9] were
-- read from has changed since: nothing written; the caller reads again and calls again.
-- The failure is taken out of its minute's count: a handover's outcome is counted
-- once, where it ends, so one that fails, is replayed and succeeds is a success in
-- the summary, not a failure and a success. (A minute's counters past their TTL are
-- gone, and stay gone: no key is made here.)
-- What a hand-back recorded about the failed runs' tasks is dropped.
-- `in_flight_since` is kept: an attempt whose outcome was never learnt may have
-- created the Interaction, and the replayed run must look for it before sending
-- (see shared/store.py).
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'unknown_handover'} end
if state == STATE.SUCCEEDED then
  return {'already_succeeded', redis.call('HGET', KEYS[1], 'interaction_sid') or ''}
end
if state ~= STATE.FAILED then return {'in_progress', state} end
local finishing = redis.call('PTTL', KEYS[5])
if finishing ~= -2 then return {'in_progress', 'finishing', tostring(finishing)} end
if #KEYS < 8 or redis.call('HGET', KEYS[1], 'conversation_sid') ~= ARGV[8]
    or (redis.call('HGET', KEYS[1], 'finished_at') or '') ~= ARGV[11] then
  return {'read_again'}
end
local latest = redis.call('GET', KEYS[8]) or ''
if latest ~= ARGV[9] then return {'read_again'} end
if latest ~= '' and latest ~= ARGV[1] then
  local other = redis.call('HGET', KEYS[9], 'state')
  if LIVE[other] or other == STATE.SUCCEEDED then
    return {'superseded', latest, other}
  end
end
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'next_attempt_at', 'ended_at', 'ended_by',
           'ended_task_sid', 'ended_attempt', 'handed_back', 'restored_webhooks')
-- The ends of tasks the failed runs made (shared/lua/hand_back.lua) are not the
-- replayed run's: its own task's end must find the gate open.
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 10) == 'early_end:' then redis.call('HDEL', KEYS[1], name) end
end
redis.call('HINCRBY', KEYS[1], 'replays', 1)
redis.call('HSET', KEYS[1], 'state', STATE.QUEUED, 'replayed_at', ARGV[7], 'updated_at', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SET', KEYS[8], ARGV[1], 'EX', ARGV[6])
if tonumber(redis.call('HGET', KEYS[7], STATE.FAILED) or '0') > 0 then
  redis.call('HINCRBY', KEYS[7], STATE.FAILED, -1)
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PSETEX', KEYS[3], ARGV[4], ARGV[2])
redis.call('ZADD', KEYS[4], ARGV[3], HANDOVER_JOB_PREFIX .. ARGV[1])
add_recent(KEYS[6], ARGV[1], ARGV[7], tonumber(ARGV[10]))
local record = redis.call('HGETALL', KEYS[1])
table.insert(record, 1, 'replayed')
return record
