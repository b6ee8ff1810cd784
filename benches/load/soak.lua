-- Soak: mixed traffic with ~1% malformed requests. Counts 5xx, and records the id of every
-- 201 so that a later pass can check each created user is readable. A 503 with Retry-After
-- is the hashing gate shedding load past HASH_QUEUE_MAX (SPEC: abuse resistance): counted
-- as shed, not as a server error.
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local max_id = tonumber(os.getenv("MAX_ID") or "10000")
local threads = {}
local thread_no = 0

function setup(thread)
   thread_no = thread_no + 1
   thread:set("tid", thread_no)
   table.insert(threads, thread)
end

function init(args)
   counter = 0
   created = ""
   server_errors = 0
   shed = 0
   malformed = 0
end

function request()
   counter = counter + 1
   local roll = math.random(1000)
   local id = math.random(1, max_id)
   if roll <= 10 then
      malformed = malformed + 1
      local kind = math.random(3)
      if kind == 1 then
         return wrk.format("POST", "/api/v1/users", nil, '{"email": "broken"')
      elseif kind == 2 then
         return wrk.format("GET", "/api/v1/users?size=abc&sort=nonsense")
      else
         return wrk.format("PATCH", "/api/v1/users/not-a-number", nil, '{"full_name": 5}')
      end
   elseif roll <= 410 then
      return wrk.format("GET", "/api/v1/users/" .. id)
   elseif roll <= 610 then
      return wrk.format("GET", "/api/v1/users?is_active=true&size=50&page=" .. math.random(1, 20))
   elseif roll <= 710 then
      return wrk.format("GET", "/api/v1/dashboard/stats")
   elseif roll <= 910 then
      local email = string.format("soak-%d-%d-%d@example.com", tid, counter, math.random(1e9))
      return wrk.format("POST", "/api/v1/users", nil, '{"email":"' .. email .. '","password":"soak-password-1"}')
   else
      return wrk.format("PATCH", "/api/v1/users/" .. id, nil, '{"full_name":"Soak ' .. counter .. '"}')
   end
end

function response(status, headers, body)
   if status == 503 and (headers["retry-after"] or headers["Retry-After"]) then
      shed = shed + 1
   elseif status >= 500 then
      server_errors = server_errors + 1
   elseif status == 201 then
      local new_id = string.match(body, '"id":(%d+)')
      if new_id then
         created = created .. new_id .. "\n"
      end
   end
end

function done(summary, latency, requests)
   local total_5xx, total_shed, total_malformed = 0, 0, 0
   local out = io.open(os.getenv("CREATED_IDS"), "w")
   for _, thread in ipairs(threads) do
      total_5xx = total_5xx + thread:get("server_errors")
      total_shed = total_shed + thread:get("shed")
      total_malformed = total_malformed + thread:get("malformed")
      out:write(thread:get("created"))
   end
   out:close()
   io.write(string.format('{"scenario":"soak","requests":%d,"seconds":%.1f,"rps":%.0f,"p99_ms":%.2f,"server_errors":%d,"shed_503":%d,"malformed_sent":%d,"socket_errors":%d}\n',
      summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
      latency:percentile(99) / 1000, total_5xx, total_shed, total_malformed,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
