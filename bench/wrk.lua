-- Cycles through request bodies and pre-signed bearer tokens (one token per request: each jti is used once).
-- Environment: BENCH_BODIES (file, one JSON body per line), BENCH_TOKENS (file, one token per line, may be
-- empty for the floor), BENCH_PATH; BENCH_EXPECT (optional): the card summaries every answer must hold, in
-- order, each followed by "|" (an answer with other cards counts as wrong).
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
  tokens = {}
  local tf = os.getenv("BENCH_TOKENS")
  if tf and tf ~= "" then
    for line in io.lines(tf) do tokens[#tokens + 1] = line end
  end
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
  i = 0
  errors = 0
  wrong = 0
  checked = 0
  expect = os.getenv("BENCH_EXPECT")
  if expect == "" then expect = nil end
  path = os.getenv("BENCH_PATH")
end

function request()
  i = i + 1
  local body = bodies[((i - 1) % #bodies) + 1]
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then
    -- thread k uses tokens k, k + n, k + 2n, ...: no two requests share a jti
    local t = tokens[(((i - 1) * nthreads + id - 1) % #tokens) + 1]
    headers["Authorization"] = "Bearer " .. t
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    if errors <= 3 then io.stderr:write("status " .. status .. ": " .. string.sub(body, 1, 200) .. "\n") end
  elseif expect then
    checked = checked + 1
    local sig = ""
    for summary in string.gmatch(body, '"summary"%s*:%s*"(.-)"') do sig = sig .. summary .. "|" end
    if sig ~= expect then
      wrong = wrong + 1
      if wrong <= 3 then io.stderr:write("wrong cards: " .. string.sub(sig, 1, 300) .. "\n") end
    end
  end
end

function done(summary, latency, requests)
  local non200, nwrong, nchecked = 0, 0, 0
  for _, t in ipairs(threads) do
    non200 = non200 + t:get("errors")
    nwrong = nwrong + t:get("wrong")
    nchecked = nchecked + t:get("checked")
  end
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non_200": %d, "wrong_cards": %d, "checked": %d, ' ..
    '"socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p95_ms": %.3f, "p99_ms": %.3f, "mean_ms": %.3f}\n',
    summary.requests, summary.duration, non200, nwrong, nchecked,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    latency.mean / 1000))
end
