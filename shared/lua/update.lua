-- Update an existing status record (shared/store.py, HandoverStore._set): HDEL,
-- HINCRBY, HSET in one step, then, for a final state, refresh the TTL and count the
-- outcome in this minute's counters (what `GET /handovers/summary` sums). With a
-- fourth key, also release the run's delivery claim (compare_and_delete, as
-- worker/lua/release_claim.lua), whether or not the record still exists: the outcome
-- and the claim's end in one round trip.
-- A failure also drops from the failed index up to FAILED_PRUNE entries that failed
-- more than a TTL ago: their records have expired (the failure set the TTL, and only
-- a replay, which takes it out of the index, sets another). Each failure adds one
-- and may remove many, so the index holds about one TTL's failures without anyone
-- listing it, and no single write does unbounded work.
-- A delivery write ('1' in ARGV[4]) changes nothing in a record that is final: a
-- run that overran its budget while its final write was on its way, or any other
-- late write, can never make a finished handover live again (only a replay does),
-- nor count its outcome twice.
-- KEYS: 1 the record, 2 the failed index, 3 this minute's outcome counters,
--       4 (optional) the claim.
-- ARGV: 1 TTL seconds (0 keeps it), 2 failed-index score ('' for none: the handover
--       is removed from the index), 3 the claim's value (unused without the key),
--       4 '1': a delivery write, refused on a final record ('' for the steps after
--       the outcome), 5 the outcome to count (STATE.SUCCEEDED or STATE.FAILED, ''
--       for none), 6 when this minute's counters expire (Unix s), 7 fields to
--       delete count, those field names, fields to increment by one count, those
--       field names, then field/value pairs.
-- Returns {record updated 0/1, claim released 0/1}; a final write that was taken
-- (ARGV[5] set) follows them with the record as it now stands, field/value pairs
-- as HGETALL gives them: the Conversation steps start from it, with no read of
-- their own (one round trip less per handover).
local released = 0
if #KEYS > 3 then released = compare_and_delete(KEYS[4], ARGV[3]) end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, released} end
if ARGV[4] == '1' and FINAL[state] then return {0, released} end
local n = tonumber(ARGV[7])
for i = 1, n do redis.call('HDEL', KEYS[1], ARGV[7 + i]) end
local m = tonumber(ARGV[8 + n])
for i = 1, m do redis.call('HINCRBY', KEYS[1], ARGV[8 + n + i], 1) end
redis.call('HSET', KEYS[1], unpack(ARGV, 9 + n + m))
if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local id = redis.call('HGET', KEYS[1], 'handover_id')
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[2], id)
  local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf',
                           '(' .. (tonumber(ARGV[2]) - tonumber(ARGV[1])), 'LIMIT', 0, FAILED_PRUNE)
  if #stale > 0 then redis.call('ZREM', KEYS[2], unpack(stale)) end
elseif tonumber(ARGV[1]) > 0 then
  redis.call('ZREM', KEYS[2], id)
end
if ARGV[5] ~= '' then
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  redis.call('EXPIREAT', KEYS[3], ARGV[6])
  return {1, released, unpack(redis.call('HGETALL', KEYS[1]))}
end
return {1, released}
