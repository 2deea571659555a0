-- wrk script for scripts/bench: one request shape, set from the environment, and
-- a last line "BENCH key=value ..." that the script parses.
--
--   WRK_METHOD         GET (default), HEAD, POST
--   WRK_BODY           request body (POST)
--   WRK_CONTENT_TYPE   Content-Type header
--   WRK_AUTHORIZATION  Authorization header
--   WRK_IF_NONE_MATCH  If-None-Match header (the 304 path)
--   WRK_EXPECT         if set (e.g. 200): every response's status is checked
--                      against it in a `response` hook, which costs wrk some
--                      speed; without it only wrk's own counters are kept
--                      (socket errors, and statuses above 399)
--
-- The environment is read in every thread's Lua state (wrk runs the script once
-- per thread and once in the main state, where setup() and done() run).

wrk.method = os.getenv("WRK_METHOD") or "GET"
wrk.body = os.getenv("WRK_BODY")
local headers = {
  ["Content-Type"] = os.getenv("WRK_CONTENT_TYPE"),
  ["Authorization"] = os.getenv("WRK_AUTHORIZATION"),
  ["If-None-Match"] = os.getenv("WRK_IF_NONE_MATCH"),
}
for name, value in pairs(headers) do
  if value and value ~= "" then wrk.headers[name] = value end
end

local expect = tonumber(os.getenv("WRK_EXPECT") or "")
local threads = {}

function setup(thread) table.insert(threads, thread) end

function init(args) ok = 0; bad = 0; first_bad = "" end

-- Defined only when asked for: wrk calls Lua for each response only if the
-- script has a `response` function.
if expect then
  function response(status, headers, body)
    if status == expect then
      ok = ok + 1
    else
      bad = bad + 1
      if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 200) end
    end
  end
end

function done(summary, latency, requests)
  local ok_n, bad_n, first = 0, 0, ""
  for _, t in ipairs(threads) do
    ok_n = ok_n + (t:get("ok") or 0)
    bad_n = bad_n + (t:get("bad") or 0)
    local fb = t:get("first_bad")
    if first == "" and fb ~= nil and fb ~= "" then first = fb end
  end
  if not expect then ok_n = summary.requests - summary.errors.status end
  local e = summary.errors
  if first ~= "" then io.write("BENCH_FIRST_BAD " .. (string.gsub(first, "\n", " ")) .. "\n") end
  io.write(string.format(
    "BENCH requests=%d ok=%d bad=%d socket_errors=%d status_errors=%d duration_us=%d rps=%.1f lat_mean_us=%.1f lat_p50_us=%d lat_p99_us=%d\n",
    summary.requests, ok_n, bad_n, e.connect + e.read + e.write + e.timeout, e.status,
    summary.duration, summary.requests / (summary.duration / 1e6), latency.mean,
    latency:percentile(50), latency:percentile(99)))
end
