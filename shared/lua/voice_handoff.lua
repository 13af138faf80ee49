-- Record a voice handoff (shared/voice_records.py, VoiceRecorder.record, for
-- POST /voice/handoff): the status record, already final, the call's pointer, its
-- entry in the recent index and its count in the minute's outcomes, in one step; a
-- repeated action request for the same call stores nothing new.
-- Twilio enqueues the call from the TwiML the API answered, so there is no job, no
-- queue entry and no rate count: this is bookkeeping, and the API answers the
-- TwiML whether or not it ran.
-- KEYS: 1 the new status record, 2 the recent index, 3 this minute's outcome
--       counters, 4 the call's pointer (absent when the request had no CallSid:
--       nothing to de-duplicate by).
-- ARGV: 1 handover id, 2 the status record's fields as a JSON object of strings,
--       3 now (s), 4 when this minute's counters expire (Unix s).
-- Constants (shared/voice_records.py, from the settings): RECORD_TTL (s),
-- RECENT_RETENTION (s).
-- Returns {1, id} (stored) or {0, the call's handover id} (a repeat: nothing written).
if #KEYS > 3 then
  local existing = redis.call('GET', KEYS[4])
  if existing then
    return {0, existing}
  end
end
local fields = {}
for name, value in pairs(cjson.decode(ARGV[2])) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], RECORD_TTL)
if #KEYS > 3 then
  redis.call('SET', KEYS[4], ARGV[1], 'EX', RECORD_TTL)
end
add_recent(KEYS[2], ARGV[1], ARGV[3], RECENT_RETENTION)
redis.call('HINCRBY', KEYS[3], STATE.SUCCEEDED, 1)
redis.call('EXPIREAT', KEYS[3], ARGV[4])
return {1, ARGV[1]}
