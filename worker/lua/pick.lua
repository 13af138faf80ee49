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
-- With FLEX_API_MAX_RPS, no more jobs than the shared token bucket
-- (worker/lua/token_bucket.lua, read here, never written) has slots for within
-- ARGV[7] µs: the backlog then waits here, in the queue's order (a priority's head
-- start, shared/queue_order.py), not in a worker's slots behind reservations made
-- long before (worker/rate_limit.py, pick_gate).
-- KEYS: 1 the queue, 2 the token bucket (read only with ARGV[5] > 0).
-- ARGV: 1 now (ms), 2 how many, 3 in-progress TTL (ms), 4 scan limit, 5 the bucket's
--       slot interval µs (0: no gate), 6 its burst (slots), 7 how far ahead slots
--       may be counted, µs, 8 its horizon µs (a TAT further ahead is a clock that
--       stepped back, as token_bucket.lua takes it).
-- Returns {job id, score, job id, score, ...}.
local wanted = tonumber(ARGV[2])
local interval = tonumber(ARGV[5] or '0')
if interval > 0 then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local tat = tonumber(redis.call('GET', KEYS[2]) or 0) or 0
  if tat < now_us or tat > now_us + tonumber(ARGV[8]) then tat = now_us end
  local slots = math.floor((now_us + tonumber(ARGV[7]) - tat) / interval) + tonumber(ARGV[6])
  if slots < wanted then wanted = slots end
  if wanted <= 0 then return {} end
end
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
