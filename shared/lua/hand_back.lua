-- The agent's task ended (shared/store.py, HandoverStore.record_end, for
-- /webhooks/taskrouter): record how, and queue the hand-back job, in one step, once.
-- The first end event for a handover wins: a repeated or later one (TaskRouter
-- delivers more than once, and a task can be completed and then deleted) finds
-- `ended_at` set and changes nothing. The record's state is not looked at: an event
-- may come before the worker wrote the outcome, and the job waits for it.
-- A missing record (unknown or expired handover) is not created.
-- An event for the task of another attempt than the handover's (`succeeded_attempt`
-- once it succeeded, `in_flight_attempt` before) is ignored: after a channel failed,
-- that attempt's task may end while the one that reached the agent goes on.
-- KEYS: 1 the status record, 2 the hand-back job's arq record, 3 the arq queue.
-- ARGV: 1 the hand-back job id, 2 job bytes, 3 queue score (ms), 4 now (s),
--       5 the event type (ended_by), 6 the task SID, 7 the task's handoverAttempt
--       ('' when it carried none).
-- Constants (shared/store.py): JOB_TTL_MS.
-- Returns {0} no record, {1, ended_by} ended already (nothing written), {2} recorded
-- and queued, {3} another attempt's task (nothing written).
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
local ended = redis.call('HMGET', KEYS[1], 'ended_at', 'ended_by', 'state',
                         'succeeded_attempt', 'in_flight_attempt')
if ended[1] then return {1, ended[2] or ''} end
if ARGV[7] ~= '' then
  local current = ended[5]
  if FINAL[ended[3]] then current = ended[4] end
  if current and current ~= ARGV[7] then return {3} end
end
redis.call('HSET', KEYS[1], 'ended_at', ARGV[4], 'ended_by', ARGV[5],
           'ended_task_sid', ARGV[6], 'updated_at', ARGV[4])
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'ended_attempt', ARGV[7]) end
redis.call('PSETEX', KEYS[2], JOB_TTL_MS, ARGV[2])
redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[1])
return {2}
