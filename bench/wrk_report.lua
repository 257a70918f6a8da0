-- Shared by the benchmark's wrk scripts (loaded with dofile): numbers the threads and, when
-- the run ends, prints one machine-readable line that bench_server.py parses:
--   WRK_RESULT {"requests": ..., "status_errors": ..., ...}
-- wrk counts a response as a status error when its status is >= 400 (it prints them as
-- "Non-2xx or 3xx responses"); none of the benchmarked endpoints redirect.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function done(summary, latency, requests)
   local sent, exhausted = 0, 0
   for _, thread in ipairs(threads) do
      sent = sent + (thread:get("sent") or 0)
      exhausted = exhausted + (thread:get("exhausted") or 0)
   end
   local errors = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, '
         .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, '
         .. '"latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d, '
         .. '"bodies_sent": %d, "bodies_exhausted": %d}\n',
      summary.requests, summary.duration, summary.bytes, errors.status,
      errors.connect, errors.read, errors.write, errors.timeout,
      latency:percentile(50), latency:percentile(99), latency.max,
      sent, exhausted))
end
