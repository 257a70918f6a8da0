-- The same request every time (wrk builds it once per thread): a GET of the URL's path, or,
-- when a file is given after `--`, a form POST whose body is that file's first line.
--   wrk -s bench/wrk_static.lua http://127.0.0.1:PORT/healthz
--   wrk -s bench/wrk_static.lua http://127.0.0.1:PORT/oauth/introspect -- body.txt

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "wrk_report.lua")

function init(args)
   if args[1] then
      local file = assert(io.open(args[1], "r"))
      local body = file:read("*l")
      file:close()
      wrk.method = "POST"
      wrk.body = body
      wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
   end
end
