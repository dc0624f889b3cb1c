-- wrk script for bench_http.py: POST a small chat-completions body with a rotating
-- x-account-id (BENCH_ACCOUNTS ids under BENCH_ACCOUNT_PREFIX), requests pre-built in
-- init() so the generator spends its time sending, and a JSON summary on stdout.
local accounts = tonumber(os.getenv("BENCH_ACCOUNTS") or "10000")
local prefix = os.getenv("BENCH_ACCOUNT_PREFIX") or "acct"
local body = os.getenv("BENCH_BODY") or "{}"
local requests = {}
local n = 0

function init(args)
  local offset = math.random(accounts) -- threads start at different accounts
  for i = 1, accounts do
    local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer sk-bench",
      ["x-account-id"] = prefix .. "-" .. ((i + offset) % accounts),
    }
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  n = n % accounts + 1
  return requests[n]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non_2xx": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "latency_p50_us": %d, "latency_p99_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
