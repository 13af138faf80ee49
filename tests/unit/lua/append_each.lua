-- A looped test script for shared/script_batcher.py (tests/unit/test_script_batcher.py):
-- for each call (one key, one argument), appends ARGV[i] to the list KEYS[i]; answers
-- a list of {the list's new length, ARGV[i]}, an answer per call.
local answers = {}
for i = 1, #KEYS do
  answers[i] = {redis.call('RPUSH', KEYS[i], ARGV[i]), ARGV[i]}
end
return answers
