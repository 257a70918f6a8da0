# gunicorn settings for `bench_server.py --access-log off`: the repository's gunicorn.conf.py
# exactly, except that the access log is switched off (gunicorn then skips formatting it, which
# `--access-logfile /dev/null` does not).
from pathlib import Path

exec(compile(Path(__file__).resolve().parents[1].joinpath("gunicorn.conf.py").read_text(), "gunicorn.conf.py", "exec"))

accesslog = None
