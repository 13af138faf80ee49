-- The GCRA token bucket every worker shares for POST /v1/Interactions
-- (worker/rate_limit.py, FlexRateLimit.take; its docstring explains the algorithm).
-- KEYS: 1 the bucket (a string: the TAT in µs since the epoch, by Redis' clock).
-- ARGV: 1 slot interval µs (1e6 / rps), 2 burst (slots), 3 the longest wait µs the
--       caller accepts (a longer one is not reserved), 4 the most a legitimate TAT can
--       be ahead of now, µs (beyond: the clock stepped back, start afresh), 5 now in
--       µs, tests only (empty: Redis' TIME).
-- Returns {1 if a slot was reserved else 0, wait µs}.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local horizon = tonumber(ARGV[4])
local now
if ARGV[5] ~= nil and ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
else
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or 0) or 0
if tat < now or tat > now + horizon then tat = now end
local next_tat = tat + interval
local wait = next_tat - burst * interval - now
if wait < 0 then wait = 0 end
if wait > max_wait then return {0, math.ceil(wait)} end
local ttl_ms = math.ceil((next_tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return {1, math.ceil(wait)}
