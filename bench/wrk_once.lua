-- Every request has a body of its own, sent exactly once: for single-use values (authorization
-- codes, rotating refresh tokens). Thread N reads PREFIX.N, one form body per line; the files
-- are disjoint slices of one pre-generated set.
--   wrk -t 2 -s bench/wrk_once.lua http://127.0.0.1:PORT/oauth/token -- /tmp/bodies
-- A thread that runs out re-sends its last body (the server answers 400 and counts a replay);
-- the number of such requests is reported as bodies_exhausted, and the run is not valid.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_report.lua")

local bodies = {}
local count = 0
sent = 0
exhausted = 0

function init(args)
   for line in io.lines(args[1] .. "." .. id) do
      if line ~= "" then
         count = count + 1
         bodies[count] = line
      end
   end
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
   if sent < count then
      sent = sent + 1
   else
      exhausted = exhausted + 1
   end
   return wrk.format(nil, nil, nil, bodies[sent])
end
