-- The same request every time (wrk builds it once per thread): a GET of the URL's path, or,
-- when a file is given after `--`, a POST whose body is that file's first line. A second file,
-- if given, holds request headers, one `Name: value` per line (Content-Type among them to
-- override the form type); a file rather than arguments, so that a bearer token never shows
-- in the process list.
--   wrk -s bench/wrk_static.lua http://127.0.0.1:PORT/healthz
--   wrk -s bench/wrk_static.lua http://127.0.0.1:PORT/oauth/introspect -- body.txt
--   wrk -s bench/wrk_static.lua http://127.0.0.1:PORT/mcp -- body.json headers.txt

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
   if args[2] then
      for line in io.lines(args[2]) do
         local name, value = line:match("^([^:]+):%s*(.*)$")
         if name then
            wrk.headers[name] = value
         end
      end
   end
end
