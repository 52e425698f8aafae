-- wrk script for the Hookgate benchmark.
--
--   wrk -t2 -c32 -d10s --latency -s bench/redeliver.lua http://127.0.0.1:PORT -- TEAMS_FILE
--
-- TEAMS_FILE has one line per team: "<bearer token> <hook-uuid> [<hook-uuid> ...]" (bench/run
-- writes 20 teams with 100 hooks each, lines of ~3.7 KB; the direct-to-mock file is one line with
-- the service token and all 2,000 hooks). Each request is a POST
-- /hooks/<hook>/requests/<uuid>/redeliver with no body, with "Authorization: Bearer <token>"
-- rotating over all the teams in turn, the hook drawn uniformly at random from that team's own
-- hooks (its allow-list; see draw_hook) and a random (UUID-shaped, version 4) request id. To
-- keep the load generator's own cost low and equal for every target, each thread pre-formats a
-- ring of 4,096 such requests in init() (its own random seed) and then cycles through it.
--
-- response() counts statuses; done() prints one summary line that bench/run parses:
--   LUA_RESULT completed=<n> non200=<n> statuses=200:<n>,401:<n>,...

local ring_size = 4096
local ring = {}
local pos = 0
-- per-thread counters: globals, so that done() can read them with thread:get()
statuses = {}
completed = 0
non200 = 0

local threads = {}
local thread_counter = 0

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
  table.insert(threads, thread)
end

local function uuid4()
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0x0fff),
    0x8000 + r(0, 0x3fff), r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
end

-- A team's hooks are dealt like a shuffled deck (reshuffled when it runs out): every hook is
-- equally likely at each draw, and every hook of the team appears in the ring as often as any
-- other (within one), so no hook is left out of, or over-represented in, the repeating ring.
-- (Independent draws would give each hook a Poisson share of the ring: with 100 hooks and ~205
-- slots per team in a thread's ring, ~13 % of a team's hooks missing from it and others 3 or 4
-- times as often as the average, for the whole run since the ring repeats.)
local function draw_hook(team)
  local hooks = team.hooks
  if team.next > #hooks then
    for i = #hooks, 2, -1 do
      local j = math.random(1, i)
      hooks[i], hooks[j] = hooks[j], hooks[i]
    end
    team.next = 1
  end
  local hook = hooks[team.next]
  team.next = team.next + 1
  return hook
end

function init(args)
  local file = args[1]
  if not file then error("redeliver.lua: pass the teams file after --") end
  local teams = {}
  for line in io.lines(file) do
    local words = {}
    for w in line:gmatch("%S+") do table.insert(words, w) end
    if #words >= 2 then
      local hooks = {}
      for i = 2, #words do table.insert(hooks, words[i]) end
      table.insert(teams, { token = words[1], hooks = hooks, next = #hooks + 1 })
    end
  end
  if #teams == 0 then error("redeliver.lua: no teams in " .. file) end
  math.randomseed(os.time() * 1000 + (thread_id or 0) * 7919 + math.floor((os.clock() * 1e6) % 1e6))
  for i = 1, ring_size do
    local team = teams[((i - 1) % #teams) + 1] -- teams in turn
    local path = "/hooks/" .. draw_hook(team) .. "/requests/" .. uuid4() .. "/redeliver"
    ring[i] = wrk.format("POST", path, { ["Authorization"] = "Bearer " .. team.token })
  end
end

function request()
  pos = pos + 1
  if pos > ring_size then pos = 1 end
  return ring[pos]
end

function response(status, headers, body)
  completed = completed + 1
  if status ~= 200 then non200 = non200 + 1 end
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total_completed, total_non200 = 0, 0
  local merged = {}
  for _, t in ipairs(threads) do
    total_completed = total_completed + (t:get("completed") or 0)
    total_non200 = total_non200 + (t:get("non200") or 0)
    local s = t:get("statuses") or {}
    for code, n in pairs(s) do merged[code] = (merged[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(merged) do table.insert(parts, code .. ":" .. n) end
  table.sort(parts)
  io.write(string.format("LUA_RESULT completed=%d non200=%d statuses=%s\n",
    total_completed, total_non200, table.concat(parts, ",")))
end
