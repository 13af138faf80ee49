-- A test script for shared/script_batcher.py (tests/unit/test_script_batcher.py):
-- appends ARGV[1] to the list KEYS[1]; returns the list's new length and ARGV[1].
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
return {length, ARGV[1]}
