-- GET /api/v1/users/{id} for ids 1..HOT_IDS (default 1000): after the first round every
-- answer comes from the user cache.
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local name = os.getenv("SCENARIO") or "user_by_id"
local hot = tonumber(os.getenv("HOT_IDS") or "1000")
function request()
   return wrk.format("GET", "/api/v1/users/" .. math.random(1, hot))
end
function done(summary, latency, requests)
   summary_json(name, summary, latency)
end
