-- wrk script for bench/restart: POST redeliver calls of one team, each on a new connection
-- ("Connection: close", as a script or a job calling the shared URL would), with a random
-- Hookshot request id.
--   wrk -t2 -c16 -d20s -s bench/restart-calls.lua http://127.0.0.1:PORT -- TOKEN HOOK
-- done() prints: LUA_RESULT completed=<n> non200=<n> statuses=200:<n>,503:<n>,...
statuses = {}
completed = 0
non200 = 0
local threads = {}
local token, hook

function setup(thread) table.insert(threads, thread) end

function init(args)
  token, hook = args[1], args[2]
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local r = math.random
  local event = string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x", r(0, 0xffff), r(0, 0xffff),
    r(0, 0xffff), r(0, 0x0fff), 0x8000 + r(0, 0x3fff), r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
  return wrk.format("POST", "/hooks/" .. hook .. "/requests/" .. event .. "/redeliver",
    { ["Authorization"] = "Bearer " .. token, ["Connection"] = "close", ["Content-Length"] = "0" })
end

function response(status)
  completed = completed + 1
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 then non200 = non200 + 1 end
end

function done()
  local total, bad, merged = 0, 0, {}
  for _, t in ipairs(threads) do
    total = total + t:get("completed")
    bad = bad + t:get("non200")
    for s, n in pairs(t:get("statuses")) do merged[s] = (merged[s] or 0) + n end
  end
  local parts = {}
  for s, n in pairs(merged) do table.insert(parts, s .. ":" .. n) end
  table.sort(parts)
  io.write(string.format("LUA_RESULT completed=%d non200=%d statuses=%s\n", total, bad, table.concat(parts, ",")))
end
