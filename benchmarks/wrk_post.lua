-- wrk script for bench_http.py: POST chat-completions bodies from BENCH_POOL (lines of
-- "account-index<TAB>body": a random account and a distinct prompt per request), with
-- x-account-id = BENCH_ACCOUNT_PREFIX-index. Requests are pre-built in init() so the
-- generator spends its time sending; done() prints a JSON summary on stdout.
local prefix = os.getenv("BENCH_ACCOUNT_PREFIX") or "acct"
local requests = {}
local n = 0

function init(args)
  for line in io.lines(os.getenv("BENCH_POOL")) do
    local account, body = line:match("^(%d+)\t(.*)$")
    local headers = {
      ["Content-Type"] = "application/json",
      ["x-account-id"] = prefix .. "-" .. account,
    }
    requests[#requests + 1] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  n = n % #requests + 1
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
