-- The agent's task ended (shared/store.py, HandoverStore.record_end, for
-- /webhooks/taskrouter): record how, and queue the hand-back job, in one step, once.
-- The first end event of the handover's task wins: a repeated or later one
-- (TaskRouter delivers more than once, and a task can be completed and then
-- deleted) finds `ended_at` set and changes nothing. Only a succeeded handover's
-- task can end it: before the outcome, which attempt's task reached the agent is
-- not known (the one in flight may be failing its channel right now), so the
-- event is kept under its attempt for the hand-back job to judge.
-- A missing record (unknown or expired handover) is not created.
-- An event for the task of another attempt than the one that succeeded
-- (`succeeded_attempt`) is ignored: after a channel failed, that attempt's task may
-- end while the one that reached the agent goes on.
-- KEYS: 1 the status record, 2 the hand-back job's arq record, 3 the arq queue.
-- ARGV: 1 the hand-back job id, 2 job bytes, 3 queue score (ms), 4 now (s),
--       5 the event type (ended_by), 6 the task SID, 7 the task's handoverAttempt
--       ('' when it carried none).
-- Constants (shared/store.py): JOB_TTL_MS.
-- Returns {0} no record, {1, ended_by} ended already, or this attempt's early end
-- kept already (nothing written), {2} recorded
-- and queued, {3} not the handover's task (nothing written), {4} the outcome is not
-- known yet: remembered under its attempt (`early_end:<attempt>`, the first one
-- only) and the job queued, which judges it once the handover has finished.
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local seen = redis.call('HMGET', KEYS[1], 'ended_at', 'ended_by', 'state', 'succeeded_attempt')
if seen[1] then return {1, seen[2] or ''} end
-- A failed handover reached no agent: any task it has is an attempt's that failed.
if seen[3] == STATE.FAILED then return {3} end
if FINAL[seen[3]] then
  if ARGV[7] ~= '' and seen[4] and seen[4] ~= ARGV[7] then return {3} end
  redis.call('HSET', KEYS[1], 'ended_at', ARGV[4], 'ended_by', ARGV[5],
             'ended_task_sid', ARGV[6], 'updated_at', ARGV[4])
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'ended_attempt', ARGV[7]) end
  redis.call('PSETEX', KEYS[2], JOB_TTL_MS, ARGV[2])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
  return {2}
end
local early = 'early_end:' .. ARGV[7]
if redis.call('HSETNX', KEYS[1], early, ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. ARGV[4]) == 0 then
  return {1, string.match(redis.call('HGET', KEYS[1], early), '^(%S+)') or ''}
end
redis.call('PSETEX', KEYS[2], JOB_TTL_MS, ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
return {4}
