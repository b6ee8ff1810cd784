-- Scenario (c): 50% reads (user by id, list page), 30% writes (PATCH a random user's
-- full_name or is_active), 20% dashboard; ids in 1..MAX_ID (the seeded users).
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local max_id = tonumber(os.getenv("MAX_ID") or "100000")
local counter = 0
-- THINK_MS: each connection waits this long between its requests (wrk's delay()), so the
-- mix runs below saturation: the tail at a given rate, not the queue at the most it can do.
local think = tonumber(os.getenv("THINK_MS") or "0")
if think > 0 then
   function delay()
      return think
   end
end

function request()
   counter = counter + 1
   local roll = math.random(100)
   local id = math.random(1, max_id)
   if roll <= 25 then
      return wrk.format("GET", "/api/v1/users/" .. id)
   elseif roll <= 50 then
      return wrk.format("GET", "/api/v1/users?is_active=true&size=50&page=" .. math.random(1, 20))
   elseif roll <= 80 then
      local body
      if roll <= 65 then
         body = '{"full_name":"Load ' .. counter .. '"}'
      else
         body = '{"is_active":' .. (math.random(2) == 1 and "true" or "false") .. '}'
      end
      return wrk.format("PATCH", "/api/v1/users/" .. id, nil, body)
   else
      return wrk.format("GET", "/api/v1/dashboard/stats")
   end
end

function done(summary, latency, requests)
   summary_json(os.getenv("SCENARIO") or "c_mixed", summary, latency)
end
