-- The live counts and the last hour's outcomes behind GET /handovers/summary
-- (shared/summary.py, SummaryReader.read), in one step: bounded work, no record read.
-- From the arq queue (scored by the ms time a job may run), hand-back jobs apart:
-- running = a due entry (score <= now) with arq's in-progress key whose record is
-- not final, queued = a due entry without one, retrying = an entry due later
-- (deferred by arq for a retry). A job whose record is final but whose run still
-- holds the key is doing the Conversation steps after the outcome
-- (worker/aftercare.py): its handover is counted where it ended, not as running.
-- At most ARGV[2] entries of each part are looked at; beyond that, the rest of the
-- part is counted by ZCOUNT as queued or retrying, hand-backs and all (a worker takes
-- the lowest scores first, so its running jobs are at the head of the due part).
-- Keys built here, not passed: the in-progress keys are arq's
-- (ARQ_IN_PROGRESS_PREFIX .. job id, the prefix put in the header by
-- shared/lua_scripts.py) and the status records (HANDOVER_KEY_PREFIX .. handover
-- id, the job id without HANDOVER_JOB_PREFIX) of the job ids read from the queue
-- here: which jobs are due is what the script finds out, so their keys cannot be
-- known before it runs, nor passed in KEYS (as worker/lua/pick.lua). They carry
-- the keys' hash tag (shared/redis_keys.py), so in Redis Cluster they are in the
-- queue's slot. At most one record read per held job: no more than the workers'
-- slots.
-- KEYS: 1 the arq queue, 2.. the minutes' outcome counters (shared/redis_keys.py,
--       outcome_bucket_key), oldest first.
-- ARGV: 1 now (ms), 2 how many entries of each part to look at.
-- Returns {queued, running, retrying, then succeeded, failed for each minute}.
local limit = tonumber(ARGV[2])
local prefix = #HAND_BACK_JOB_PREFIX
local function is_handover(job)
  return string.sub(job, 1, prefix) ~= HAND_BACK_JOB_PREFIX
end
local job_prefix = #HANDOVER_JOB_PREFIX
local queued, running, retrying = 0, 0, 0
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit)
for i = 1, #due do
  if is_handover(due[i]) then
    if redis.call('EXISTS', ARQ_IN_PROGRESS_PREFIX .. due[i]) == 1 then
      local handover_id = string.sub(due[i], job_prefix + 1)
      local state = redis.call('HGET', HANDOVER_KEY_PREFIX .. handover_id, 'state')
      if not FINAL[state] then running = running + 1 end
    else
      queued = queued + 1
    end
  end
end
if #due == limit then
  queued = queued + redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]) - limit
end
local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, limit)
for i = 1, #later do
  if is_handover(later[i]) then retrying = retrying + 1 end
end
if #later == limit then
  retrying = retrying + redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf') - limit
end
local reply = {queued, running, retrying}
for i = 2, #KEYS do
  local counts = redis.call('HMGET', KEYS[i], STATE.SUCCEEDED, STATE.FAILED)
  reply[#reply + 1] = tonumber(counts[1] or '0')
  reply[#reply + 1] = tonumber(counts[2] or '0')
end
return reply
