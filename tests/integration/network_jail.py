"""A loopback-only network for a server process under test.

The jail is a ``sitecustomize`` module put first on the child's PYTHONPATH (Python imports it at
start-up, before the application, and gunicorn's workers inherit it through ``fork``). It wraps
``socket.getaddrinfo`` and ``socket.socket.connect``/``connect_ex``: names other than
``localhost`` and addresses other than loopback are refused (no DNS query, no packet) and
recorded, one line each, in a file the test reads. A test that must never reach the internet
(e.g. claude.ai) stays on loopback even when the code under test misbehaves, and can assert that
nothing even tried to leave.
"""

from __future__ import annotations

from pathlib import Path

SITECUSTOMIZE = '''\
"""Network jail (tests/integration/network_jail.py): loopback only, every other attempt recorded."""
import ipaddress
import os
import socket

_RECORD = os.environ["NETWORK_JAIL_RECORD"]
_getaddrinfo = socket.getaddrinfo
_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _record(what):
    with open(_RECORD, "a", encoding="utf-8") as record:
        record.write(what + "\\n")


def _local_name(host):
    if host is None:  # a passive (bind) lookup
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = host.strip("[]").split("%", 1)[0].lower().rstrip(".")
    if host in ("", "localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def getaddrinfo(host, port, *args, **kwargs):
    if not _local_name(host):
        _record(f"resolve {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"network jail: {host!r} is not loopback")
    return _getaddrinfo(host, port, *args, **kwargs)


def _loopback_address(sock, address):
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return True  # Unix sockets and the like stay on the machine
    try:
        return ipaddress.ip_address(str(address[0]).split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def connect(self, address):
    if not _loopback_address(self, address):
        _record(f"connect {address!r}")
        raise ConnectionRefusedError(f"network jail: {address!r} is not loopback")
    return _connect(self, address)


def connect_ex(self, address):
    if not _loopback_address(self, address):
        _record(f"connect {address!r}")
        raise ConnectionRefusedError(f"network jail: {address!r} is not loopback")
    return _connect_ex(self, address)


socket.getaddrinfo = getaddrinfo
socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
'''


class NetworkJail:
    """``environment()`` goes into the server's environment; ``attempts()`` lists what the
    server tried to reach beyond loopback ("resolve 'claude.ai'", "connect ('1.2.3.4', 443)")."""

    def __init__(self, directory: Path) -> None:
        self._module_dir = directory / "network-jail"
        self._module_dir.mkdir(parents=True, exist_ok=True)
        (self._module_dir / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        self._record = directory / "network-jail.log"
        self._record.write_text("", encoding="utf-8")

    def environment(self, pythonpath: str = "") -> dict[str, str]:
        path = str(self._module_dir) + (f":{pythonpath}" if pythonpath else "")
        return {"PYTHONPATH": path, "NETWORK_JAIL_RECORD": str(self._record)}

    def attempts(self) -> list[str]:
        return self._record.read_text(encoding="utf-8").splitlines()
