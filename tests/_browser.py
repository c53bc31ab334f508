"""Headless Chromium and JupyterLab for the browser tests, started the same way for each.

Needs Debian's ``chromium`` and ``chromium-driver`` (``sudo apt-get install -y chromium
chromium-driver``; CI's ``.ci/run`` installs them) and the ``selenium`` package. A test module
calls :func:`require_browser` at import: it skips with :data:`HOW_TO_GET` when either is
missing. Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from parallel_kit.servers.launcher import free_port, stop_process

CHROMIUM = os.environ.get("PARALLEL_KIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("PARALLEL_KIT_CHROMEDRIVER", "/usr/bin/chromedriver")
HOW_TO_GET = ("needs Chromium and its driver: `sudo apt-get install -y chromium chromium-driver` "
              "(Debian/Ubuntu; or set PARALLEL_KIT_CHROMIUM / PARALLEL_KIT_CHROMEDRIVER) and "
              "`pip install selenium`")
#: Clock seconds JupyterLab has to answer its status API.
LAB_START_S = 120.0


def have_browser() -> bool:
    """Selenium importable and both binaries present."""
    try:
        import selenium.webdriver  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER))


def require_browser() -> None:
    """Skip the calling test module (at import) when there is no browser to drive."""
    if not have_browser():
        pytest.skip(HOW_TO_GET, allow_module_level=True)


@contextlib.contextmanager
def chromium(profile: Path, extra_flags: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium (a 1400 × 2000 window) driven by Selenium; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,2000", f"--user-data-dir={profile}", *extra_flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def jupyter_lab(root: Path, env: dict[str, str], python: str = sys.executable
                ) -> Iterator[tuple[str, str]]:
    """JupyterLab serving ``root`` on 127.0.0.1 with a token; yields ``(base URL, token)``.

    ``env`` is the server's (and its kernels') whole environment. Its settings, runtime files
    and workspaces live under ``root/jupyter`` (no "get news?" pop-up over the page). Fails the
    test with the server's log when it does not answer within :data:`LAB_START_S`.
    """
    home = root / "jupyter"
    port, token = free_port(), secrets.token_hex(16)
    settings = home / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {**env, "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    log_path = root / "jupyter.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [python, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1",
             f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             f"--LabApp.user_settings_dir={home / 'settings'}",
             f"--LabApp.workspaces_dir={home / 'workspaces'}",
             "--ServerApp.open_browser=False", "--LabApp.extension_manager=readonly",
             *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + LAB_START_S
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail("JupyterLab did not start: "
                                    + log_path.read_text(errors="replace")[-2000:])
                    time.sleep(0.2)  # polling a server that is starting
            yield url, token
        finally:
            stop_process(proc, 30.0)
