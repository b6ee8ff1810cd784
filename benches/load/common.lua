-- Shared by the wrk scenarios: auth header, and a JSON summary with p50/p95/p99 and errors.
local token = os.getenv("ROSTER_TOKEN") or ""
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

function summary_json(name, summary, latency)
   local errors = summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.status + summary.errors.timeout
   local seconds = summary.duration / 1e6
   io.write(string.format(
      '{"scenario":"%s","requests":%d,"seconds":%.2f,"rps":%.0f,"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"errors":%d,"non_2xx":%d}\n',
      name, summary.requests, seconds, summary.requests / seconds,
      latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
      errors, summary.errors.status))
end
