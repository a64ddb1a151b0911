-- wrk script: signed GitHub workflow_job deliveries to POST /webhook.
--
--   PAYLOAD=payload.json SIGNATURE=sha256=... wrk -t1 -c32 -d8s --latency \
--     -s bench.lua http://127.0.0.1:PORT/webhook
--
-- PAYLOAD    the body file, sent byte for byte (default: payload.json
--            beside this script, or in the current directory)
-- SIGNATURE  the X-Hub-Signature-256 value for that body: "sha256=" and
--            the hex HMAC-SHA256 of the file under the webhook secret
--            (the signature covers only the body, so one is enough)
-- RUN_ID     optional; 8 hex digits that start every delivery id of this
--            run. Default: read from /dev/urandom.
--
-- Every request carries a new X-GitHub-Delivery, shaped like GitHub's
-- (a UUID): RUN_ID-THREAD-COUNTER, so no two requests of a run, nor of two
-- runs, share an id and the service records each one as a fresh delivery.
-- A response other than 202 is counted and reported at the end (wrk itself
-- only reports non-2xx/3xx ones, and a 204 "ignored" would look fine).

local function script_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) == "@" then
    return src:sub(2):match("(.*/)") or "./"
  end
  return "./"
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function random_hex8()
  local f = io.open("/dev/urandom", "rb")
  if f then
    local b = f:read(4)
    f:close()
    return string.format("%02x%02x%02x%02x", b:byte(1, 4))
  end
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  return string.format("%08x", math.random(0, 0x7fffffff))
end

local payload_path = os.getenv("PAYLOAD")
local body
if payload_path and payload_path ~= "" then
  body = read_file(payload_path)
else
  payload_path = script_dir() .. "payload.json"
  body = read_file(payload_path) or read_file("payload.json")
end
if not body then
  error("bench.lua: cannot read the payload " .. payload_path .. " (set PAYLOAD)")
end

local signature = os.getenv("SIGNATURE")
if not signature or signature:sub(1, 7) ~= "sha256=" then
  error("bench.lua: set SIGNATURE to the X-Hub-Signature-256 value (sha256=<hex>) of the payload")
end

-- The main state and each thread's state load this file separately; the run
-- id must be the same in all of them, so take it from the environment when
-- given, else from the main state (setup below hands it to each thread).
run_id = os.getenv("RUN_ID")
if not run_id or not run_id:match("^%x%x%x%x%x%x%x%x$") then
  run_id = random_hex8()
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
wrk.headers["X-GitHub-Event"] = "workflow_job"
wrk.headers["X-GitHub-Hook-ID"] = "512345678"
wrk.headers["X-GitHub-Hook-Installation-Target-Type"] = "integration"
wrk.headers["X-GitHub-Hook-Installation-Target-ID"] = "1"
wrk.headers["X-Hub-Signature-256"] = signature

-- Main state: number the threads and give each the run id.
local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  thread:set("run_id", run_id)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

-- Thread state.
thread_id = 0
local counter = 0
sent = 0
not_accepted = 0
last_bad_status = 0

function request()
  counter = counter + 1
  -- UUID shape: 8-4-4-4-12 hex digits.
  local id = string.format("%s-%04x-4000-8000-%012x", run_id, thread_id % 0x10000, counter)
  wrk.headers["X-GitHub-Delivery"] = id
  sent = counter
  return wrk.format(nil, nil, nil, nil)
end

function response(status, headers, body)
  if status ~= 202 then
    not_accepted = not_accepted + 1
    last_bad_status = status
  end
end

function done(summary, latency, requests)
  local sent_total, bad_total, bad_status = 0, 0, 0
  for _, t in ipairs(threads) do
    sent_total = sent_total + (t:get("sent") or 0)
    bad_total = bad_total + (t:get("not_accepted") or 0)
    local s = t:get("last_bad_status") or 0
    if s ~= 0 then bad_status = s end
  end
  io.write(string.format("bench.lua: run_id %s, %d requests written, %d responses not 202",
    run_id, sent_total, bad_total))
  if bad_total > 0 then
    io.write(string.format(" (last one %d)", bad_status))
  end
  io.write("\n")
end
