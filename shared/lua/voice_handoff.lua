-- Record a voice handoff (shared/voice_records.py, VoiceRecorder.record, for
-- POST /voice/handoff): the status record, already final, and the call's pointer,
-- in one step; a repeated action request for the same call stores nothing new.
-- Twilio enqueues the call from the TwiML the API answered, so there is no job, no
-- queue entry and no rate count: this is bookkeeping, and the API answers the
-- TwiML whether or not it ran.
-- KEYS: 1 the new status record, 2 the call's pointer (absent when the request had
--       no CallSid: nothing to de-duplicate by).
-- ARGV: 1 handover id, 2 the status record's fields as a JSON object of strings.
-- Constants (shared/voice_records.py, from the settings): RECORD_TTL (s).
-- Returns {1, id} (stored) or {0, the call's handover id} (a repeat: nothing written).
if #KEYS > 1 then
  local existing = redis.call('GET', KEYS[2])
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
if #KEYS > 1 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', RECORD_TTL)
end
return {1, ARGV[1]}
