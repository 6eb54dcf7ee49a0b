-- wrk script for bench/envoy/run.py and bench/haproxy/run.py: GET /api/items with
-- `Authorization: Bearer <token>`, cycling through the tokens of a file (one a line, given after
-- `--`, then optionally the 1-based position to start at, so a measurement goes on where its
-- warm-up stopped, then optionally the name of a response header whose values to count),
-- counting the status codes, and printing one machine-readable line at the end:
--   BENCH_RESULT {"requests":..,"duration_us":..,"latency_us":{"p50":..,..},"statuses":{"200":..},..}
-- With a header name the line also has "header":{"name":..,"values":{"<value>":count,..},"missing":n}
-- (an empty value counts as missing).

local requests = {}
local position = 1
statuses = {} -- a global, so that done() can collect it from every thread (thread:get)
header_name = nil -- likewise: the header to count (lower case), its values, and answers without it
header_values = {}
header_missing = 0

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
  if args[3] ~= nil and #args[3] > 0 then
    header_name = string.lower(args[3])
  end
end

function request()
  local req = requests[position]
  position = position % #requests + 1
  return req
end

local function header_value(headers)
  local value = headers[header_name]
  if value == nil then
    for name, v in pairs(headers) do
      if string.lower(name) == header_name then
        return v
      end
    end
  end
  return value
end

function response(status, headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if header_name ~= nil then
    local value = header_value(headers)
    if value == nil or value == "" then
      header_missing = header_missing + 1
    else
      header_values[value] = (header_values[value] or 0) + 1
    end
  end
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
  local name, values, missing = nil, {}, 0
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses") or {}) do
      merged[code] = (merged[code] or 0) + count
    end
    name = name or thread:get("header_name")
    for value, count in pairs(thread:get("header_values") or {}) do
      values[value] = (values[value] or 0) + count
    end
    missing = missing + (thread:get("header_missing") or 0)
  end
  local header = ""
  if name ~= nil then
    header = string.format(',"header":{"name":%q,"values":%s,"missing":%d}', name, json_object(values), missing)
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    percentiles[#percentiles + 1] = string.format('"p%s":%d', tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"latency_us":{%s,"mean":%.1f,"max":%d},"statuses":%s,' ..
    '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}%s}\n',
    summary.requests, summary.duration, summary.bytes,
    table.concat(percentiles, ","), latency.mean, latency.max, json_object(merged),
    e.connect, e.read, e.write, e.timeout, header))
end
