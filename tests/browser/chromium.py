"""The Chromium the browser tests drive: Debian's ``chromium`` package, installed by the test set-up
itself when the machine lacks it (CI: a fresh Debian machine, as root), since Playwright's own
browser download cannot work here.

Without it, and unable to install it (not root, or no apt-get), the tests fail with one message
saying how to install it. Nothing is skipped.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path

# fonts-dejavu-core: a real font, so that text has its width and the overflow checks mean
# something on a machine with no fonts (Chromium's recommended fonts are not installed).
DEBIAN_PACKAGES = ("chromium", "fonts-dejavu-core")
EXECUTABLE = "chromium"
INSTALL_HINT = (
    "the browser tests drive Debian's Chromium: install it (Debian/Ubuntu: "
    f"sudo apt-get install {' '.join(DEBIAN_PACKAGES)}) so that `{EXECUTABLE}` is on PATH, "
    "or run the tests as root on Debian, where they install it themselves"
)
# xdist workers may all want it at once: one installs, the others wait and find it.
INSTALL_LOCK = Path("/tmp/mcp-oauth-bridge-chromium-install.lock")
APT_OPTIONS = ("-o", "DPkg::Lock::Timeout=300", "-o", "Acquire::Retries=3")
APT_TIMEOUT_SECONDS = 900


class ChromiumUnavailable(RuntimeError):
    """Chromium is missing and could not be installed; says why and how to fix it."""


def chromium_executable() -> str:
    """The path of Debian's Chromium, installing the package first when it is missing and we
    may (root with apt-get)."""
    found = shutil.which(EXECUTABLE)
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ChromiumUnavailable(INSTALL_HINT)
    with open(INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(EXECUTABLE)  # another worker installed it meanwhile
        if found is None:
            _apt_install(DEBIAN_PACKAGES)
            found = shutil.which(EXECUTABLE)
    if found is None:
        raise ChromiumUnavailable(f"apt-get installed {' '.join(DEBIAN_PACKAGES)} but `{EXECUTABLE}` is not on PATH")
    return found


def _apt_install(packages: tuple[str, ...]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", *APT_OPTIONS, "install", "-y", "--no-install-recommends", *packages]
    started = time.monotonic()
    if subprocess.run(install, env=env, capture_output=True, timeout=APT_TIMEOUT_SECONDS).returncode != 0:
        # A fresh machine may have no package lists yet.
        for command in (["apt-get", *APT_OPTIONS, "update"], install):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_SECONDS)
            if result.returncode != 0:
                raise ChromiumUnavailable(
                    f"{' '.join(command)} failed ({result.returncode}) while installing Chromium for the tests:\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
    # Shown with -s, and in the log of a failing run: how long the set-up took.
    print(f"installed {' '.join(packages)} in {time.monotonic() - started:.0f} s")
