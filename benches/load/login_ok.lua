-- Right-password logins of the bench superuser: each one a full argon2 verification at
-- the default cost, and a new session.
dofile(os.getenv("LUA_DIR") .. "/common.lua")
local name = os.getenv("SCENARIO") or "login_ok"
function request()
   return wrk.format("POST", "/api/v1/auth/login", {["Content-Type"] = "application/json"},
      '{"email":"bench@example.com","password":"bench-password-1"}')
end
function done(summary, latency, requests)
   summary_json(name, summary, latency)
end
