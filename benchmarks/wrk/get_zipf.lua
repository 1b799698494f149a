-- wrk script: GET $PATH_PREFIX<key>, per request, for a key of $KEYS_FILE (one a line, already URL-safe)
-- drawn from a Zipf distribution: the key of popularity rank k (1..n) is asked with probability
-- k^-s / H, H = sum of j^-s over j = 1..n, s = $ZIPF_S (default 1.1).
-- usage: KEYS_FILE=/tmp/augury-bench/http/keys.txt PATH_PREFIX=/v1/models/hgb20/predictions/ \
--          ZIPF_S=1.1 ZIPF_DRAWS=200000 wrk -t1 -c32 -d10s --latency -s get_zipf.lua http://127.0.0.1:8000
-- In init (after wrk has set the Host header), with a fixed seed so every run gets the same table:
-- the keys are shuffled, so that rank order is not file order (the popular keys are spread over the key
-- space, not the first rows of the store); $ZIPF_DRAWS (default 200,000) ranks are drawn by inverse CDF
-- (a binary search of a uniform number in the cumulative harmonic weights) and their requests formatted
-- into a table. A request then picks one entry of that table at random: one table index and one random
-- number, as in get_random.lua.
local requests_ = {}

init = function(args)
  local path = os.getenv("KEYS_FILE")
  local prefix = assert(os.getenv("PATH_PREFIX"), "PATH_PREFIX is not set")
  local s = tonumber(os.getenv("ZIPF_S") or "1.1")
  local draws = tonumber(os.getenv("ZIPF_DRAWS") or "200000")
  local keys = {}
  local f = assert(io.open(path, "rb"), "cannot open KEYS_FILE " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then
      keys[#keys + 1] = line
    end
  end
  f:close()
  local n = #keys
  assert(n > 0, "no keys in " .. path)
  math.randomseed(20240101)
  for i = n, 2, -1 do -- Fisher-Yates: keys[k] is the key of rank k
    local j = math.random(i)
    keys[i], keys[j] = keys[j], keys[i]
  end
  local cdf, total = {}, 0
  for k = 1, n do
    total = total + k ^ -s
    cdf[k] = total
  end
  local formatted = {} -- rank -> its request, formatted once
  for i = 1, draws do
    local u = math.random() * total
    local lo, hi = 1, n -- the smallest rank k with cdf[k] >= u
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < u then
        lo = mid + 1
      else
        hi = mid
      end
    end
    local req = formatted[lo]
    if req == nil then
      req = wrk.format("GET", prefix .. keys[lo])
      formatted[lo] = req
    end
    requests_[i] = req
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

request = function()
  return requests_[math.random(#requests_)]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"lat_mean_us":%.1f,"lat_stdev_us":%.1f,' ..
    '"lat_max_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency.stdev, latency.max, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
