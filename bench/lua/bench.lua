-- wrk script for the mediaedge benchmarks.
--   BENCH_MODE=single   (default) the URL's path, wrk's prebuilt request (fastest)
--   BENCH_MODE=zipf     path = string.format(BENCH_TEMPLATE, k), k in [0, BENCH_N) Zipf(BENCH_S)
--   BENCH_MODE=uniform  the same, k uniform
-- done() prints one line "BENCHJSON {...}" with counts and latency percentiles (µs).
local mode = os.getenv("BENCH_MODE") or "single"
local n = tonumber(os.getenv("BENCH_N") or "1")
local s = tonumber(os.getenv("BENCH_S") or "1.0")
local tmpl = os.getenv("BENCH_TEMPLATE") or "/%d"
local seed = tonumber(os.getenv("BENCH_SEED") or "1")
local nthreads = 0
local cdf = nil

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end

function init(args)
  math.randomseed(seed * 7919 + (tid or 0))
  if mode == "zipf" then
    cdf = {}
    local total = 0
    for k = 1, n do
      total = total + 1 / (k ^ s)
      cdf[k] = total
    end
    for k = 1, n do
      cdf[k] = cdf[k] / total
    end
  end
end

if mode ~= "single" then
  request = function()
    local k
    if mode == "zipf" then
      local u = math.random()
      local lo, hi = 1, n
      while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if cdf[mid] < u then lo = mid + 1 else hi = mid end
      end
      k = lo
    else
      k = math.random(n)
    end
    return wrk.format("GET", string.format(tmpl, k - 1))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
