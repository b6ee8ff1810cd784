-- Wrong logins for ever-new addresses: each one costs a full argon2 check (the per-account
-- limit never engages), the worst case for the hashing admission gate.
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local name = os.getenv("SCENARIO") or "login_flood"
local n = 0
function request()
   n = n + 1
   local body = string.format('{"email":"flood-%d-%d@example.com","password":"wrong-password-1"}', math.random(1, 1e9), n)
   return wrk.format("POST", "/api/v1/auth/login", {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
   summary_json(name, summary, latency)
end
