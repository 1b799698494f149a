-- wrk script: POST, per request, a body picked at random from $BODIES_FILE (one JSON body a line).
-- usage: BODIES_FILE=/tmp/augury-bench/http/bodies_hybrid.jsonl wrk -t1 -c32 -d10s --latency \
--          -s post_random.lua URL
-- Every request is formatted once, in init (after wrk has set the Host header), so a request costs one
-- table index and one random number.
local requests_ = {}

init = function(args)
  local path = os.getenv("BODIES_FILE")
  local f = assert(io.open(path, "rb"), "cannot open BODIES_FILE " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then
      requests_[#requests_ + 1] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
    end
  end
  f:close()
  assert(#requests_ > 0, "no bodies in " .. path)
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
