-- wrk script for bench/soak: one class of traffic (valid, new-kid or forged tokens) at a set
-- pace. GET <the URL's path> with `Authorization: Bearer <token>`, cycling through the tokens
-- of a file (one a line), waiting `delay_ms` after each answer on a connection, so the rate is
-- about connections * 1000 / (delay_ms + latency) whatever the proxy's speed: the soak test
-- looks for wrong answers under a steady load, not for the proxy's maximum.
--   wrk -t 1 -c N -d Ts -s stream.lua URL -- TOKEN_FILE DELAY_MS
-- Run it with one thread (-t 1): every thread would start at the top of the file, and the
-- forged-token floods need each token (each random kid) to be sent once.
-- It prints the line bench/envoy/wrk_runner.py parses (the same format as bench/envoy/load.lua):
--   BENCH_RESULT {"requests":..,"latency_us":{..,"max":..},"statuses":{"200":..},"socket_errors":{..}}

local requests = {}
local position = 1
local pause = 0
statuses = {} -- a global, so that done() can collect it from every thread (thread:get)

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s stream.lua URL -- TOKEN_FILE DELAY_MS")
  end
  pause = tonumber(args[2]) or 0
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if #requests == 0 then
    error("no tokens in " .. path)
  end
end

function delay()
  return pause
end

function request()
  local req = requests[position]
  position = position % #requests + 1
  return req
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

local function json_object(tbl)
  local parts = {}
  for k, v in pairs(tbl) do
    parts[#parts + 1] = string.format("%q:%d", tostring(k), v)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, _)
  local merged = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses") or {}) do
      merged[code] = (merged[code] or 0) + count
    end
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 99 }) do
    percentiles[#percentiles + 1] = string.format('"p%s":%d', tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{%s,"mean":%.1f,"max":%d},"statuses":%s,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    table.concat(percentiles, ","), latency.mean, latency.max, json_object(merged),
    e.connect, e.read, e.write, e.timeout, e.status))
end
