-- wrk script: Alertmanager-shaped webhook posts, every alert with its own fingerprint.
--   wrk -s bench/wrk_post.lua URL -- <alerts per post> <run tag> [bearer token] [match]
-- The run tag (letters/digits) keeps fingerprints distinct across runs; "match" gives the
-- alerts alertname BenchDispatch (a rule matches it) instead of BenchIngest (none does).
-- At the end it prints one JSON line: requests, duration, non-2xx, errors, p50/p99 (us).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  n_alerts = tonumber(args[1] or "1")
  tag = args[2] or "x"
  token = args[3]
  alertname = (args[4] == "match") and "BenchDispatch" or "BenchIngest"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
end

local function alert(fp, i)
  return '{"status":"firing","labels":{"alertname":"' .. alertname ..
    '","instance":"i-' .. i .. '","job":"bench","severity":"warning","fp":"' .. fp ..
    '"},"annotations":{"summary":"bench alert ' .. i .. '"},' ..
    '"startsAt":"2026-11-23T08:00:00Z","endsAt":"0001-01-01T00:00:00Z",' ..
    '"generatorURL":"http://127.0.0.1:9090/graph","fingerprint":"' .. fp .. '"}'
end

function request()
  counter = counter + 1
  local parts = {}
  for i = 1, n_alerts do
    parts[i] = alert(tag .. "t" .. id .. "r" .. counter .. "a" .. i, i)
  end
  local body = '{"version":"4","status":"firing","receiver":"healer","groupKey":"{}:{g=\\"' ..
    counter .. '\\"}","truncatedAlerts":0,"groupLabels":{},"commonLabels":{},' ..
    '"commonAnnotations":{},"externalURL":"http://127.0.0.1:9093","alerts":[' ..
    table.concat(parts, ",") .. ']}'
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
