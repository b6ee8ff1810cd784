-- One fixed GET (the URL's path and query), e.g. cached dashboard, a list page, /health/live.
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local name = os.getenv("SCENARIO") or "simple"
function done(summary, latency, requests)
   summary_json(name, summary, latency)
end
