-- Move one queued arq job written before the hash tag to its tagged job id
-- (shared/key_migration.py, LegacyKeyMigration.move_jobs): the job record, its
-- in-progress mark and its try count under the new id (RENAMENX: the TTLs go with
-- them), and its queue entry, with the same score, to the tagged queue; in one step,
-- so a job is never half moved and a worker sees it under one name only. The old
-- keys cross slots: this runs on the standalone Redis the old layout was written on.
-- KEYS: 1 the old queue, 2 the new queue, 3/4 the job record old/new, 5/6 arq's
--       in-progress key old/new, 7/8 arq's retry count old/new.
-- ARGV: 1 the old job id, 2 the new job id.
-- Returns 1 (moved), or 0 (the old queue no longer holds it: moved by another run).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
for i = 3, 7, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAMENX', KEYS[i], KEYS[i + 1]) end
end
redis.call('ZADD', KEYS[2], 'NX', score, ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
