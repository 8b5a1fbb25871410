"""Session set-up: one real Prefect server (SQLite, loopback) for the whole run.

The environment is fixed here, before anything imports Prefect: a private
PREFECT_HOME, no analytics, the quiet logging config. The server process starts
when the session starts and is waited for only by the tests that need it, so the
local-engine tests run while it boots.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from beluga_flows.tools.server import LocalServer, prefect_env

_ROOT = Path(tempfile.mkdtemp(prefix="beluga-tests-"))
_SERVER: LocalServer | None = None

os.environ.update(prefect_env(_ROOT / "client", PREFECT_LOGGING_LEVEL="WARNING"))
os.environ.pop("BELUGA_FLOWS_PROVIDER", None)
os.environ["BELUGA_FLOWS_WORKFLOW_POLL"] = "0.2"  # workflow runs look for messages 5 times a second


def pytest_sessionstart(session: pytest.Session) -> None:
    global _SERVER
    _SERVER = LocalServer.launch(_ROOT / "server")
    os.environ["PREFECT_API_URL"] = _SERVER.api_url


def _drain_prefect_workers() -> None:
    """Send buffered logs and events before the server goes away."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _drain_prefect_workers()
    if _SERVER is not None:
        _SERVER.stop()
    shutil.rmtree(_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_server() -> LocalServer:
    """The session's Prefect server, once its API answers."""
    assert _SERVER is not None
    _SERVER.wait_ready(180)
    return _SERVER


@pytest.fixture(params=["local", "prefect"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test once per engine: the contract is the same on both."""
    if request.param == "prefect":
        request.getfixturevalue("prefect_server")
    monkeypatch.setenv("BELUGA_FLOWS_PROVIDER", request.param)
    yield request.param


@pytest.fixture
def tmp_out(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 for the session (no persistence)."""
    import subprocess
    import time

    import redis

    from beluga_flows.tools.server import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: make test installs it (apt-get install redis-server)"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis.from_url(url).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)
