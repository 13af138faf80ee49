-- wrk script for bench/load.py: every request a tool call for a new conversation.
-- wrk ... -s bench/wrk_tool_call.lua URL -- <bearer token> <round number>

local threads = {}

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  token = args[1] or ""
  round = tonumber(args[2] or "0")
  counter = 0
end

function request()
  counter = counter + 1
  local conversation = string.format("CH%04x%04x%024x", round, thread_number, counter)
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["X-Session-Id"] = "webhook:conversations__IS00000000000000000000000000000000/" .. conversation,
    ["X-Identity"] = "whatsapp:+15555550100",
    ["Content-Type"] = "application/json",
  }
  return wrk.format("POST", nil, headers, '{"reason":"load test"}')
end
