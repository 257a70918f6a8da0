"""Every test process runs in the network jail (tests/integration/network_jail.py): name
resolutions other than localhost and connections beyond loopback are refused before any packet
leaves, and a test during which anything tried fails, naming the attempt. So a test that feeds
the server a URL client id (the fuzz, a hostile document) can never make it reach the internet,
even when a guard of ours is broken."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.integration.network_jail import SITECUSTOMIZE

_handle, _record = tempfile.mkstemp(prefix="network-jail-", suffix=".log")
os.close(_handle)
RECORD = Path(_record)
os.environ["NETWORK_JAIL_RECORD"] = str(RECORD)
exec(compile(SITECUSTOMIZE, "network_jail (in process)", "exec"), {"__name__": "network_jail_in_process"})


@pytest.fixture(autouse=True)
def stays_on_loopback() -> Iterator[None]:
    before = RECORD.stat().st_size
    yield
    with RECORD.open(encoding="utf-8") as record:
        record.seek(before)
        attempts = record.read().splitlines()
    assert not attempts, f"the test tried to reach beyond loopback: {attempts}"
