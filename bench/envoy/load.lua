-- wrk script for bench/envoy/run.py: GET /api/items with `Authorization: Bearer <token>`,
-- cycling through the tokens of a file (one a line, given after `--`, then optionally the
-- 1-based position to start at, so a measurement goes on where its warm-up stopped), counting
-- the status codes, and printing one machine-readable line at the end:
--   BENCH_RESULT {"requests":..,"duration_us":..,"latency_us":{"p50":..,..},"statuses":{"200":..},..}

local requests = {}
local position = 1
statuses = {} -- a global, so that done() can collect it from every thread (thread:get)

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s load.lua URL -- TOKEN_FILE")
  end
  -- Format every request once: per-request string building in Lua would make wrk, not the
  -- proxy, the bottleneck on the fastest configurations.
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("GET", "/api/items", { ["Authorization"] = "Bearer " .. line })
    end
  end
  if #requests == 0 then
    error("no tokens in " .. path)
  end
  position = ((tonumber(args[2]) or 1) - 1) % #requests + 1
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
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    percentiles[#percentiles + 1] = string.format('"p%s":%d', tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{%s,"mean":%.1f,"max":%d},"statuses":%s,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    table.concat(percentiles, ","), latency.mean, latency.max, json_object(merged),
    e.connect, e.read, e.write, e.timeout))
end
