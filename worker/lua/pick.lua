-- Take up to ARGV[2] ready jobs (score <= now) from the head of the queue, each only
-- if its in-progress key could be set (SET NX PX) (worker/arq_worker.py,
-- HandoverWorker._start_ready_jobs): what arq's start_jobs does per job with
-- WATCH/EXISTS/ZSCORE/MULTI, for a batch at once. Jobs running elsewhere or left by a
-- dead run are skipped here, in Redis, so they neither cost a round trip each nor hide
-- the jobs behind them. At most ARGV[4] queue entries are looked at (bounds the
-- script's run time).
-- Keys built here, not passed: the in-progress keys are arq's
-- (ARQ_IN_PROGRESS_PREFIX .. job id, the prefix put in the header by
-- shared/lua_scripts.py) for job ids read from the queue here. Which jobs are ready
-- and free is what the script finds out, so their keys cannot be known before it
-- runs, nor passed in KEYS. The job ids carry the keys' hash tag
-- (shared/redis_keys.py), so in Redis Cluster these keys are in the queue's slot.
-- KEYS: 1 the queue.
-- ARGV: 1 now (ms), 2 how many, 3 in-progress TTL (ms), 4 scan limit.
-- Returns {job id, score, job id, score, ...}.
local wanted = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local batch = 256
local picked = {}
local offset = 0
while offset < limit do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES',
                         'LIMIT', offset, math.min(batch, limit - offset))
  for i = 1, #ids, 2 do
    if redis.call('SET', ARQ_IN_PROGRESS_PREFIX .. ids[i], '1', 'PX', ARGV[3], 'NX') then
      picked[#picked + 1] = ids[i]
      picked[#picked + 1] = ids[i + 1]
      if #picked >= 2 * wanted then return picked end
    end
  end
  if #ids < 2 * batch then return picked end
  offset = offset + batch
end
return picked
