"""Start and stop a local Prefect server (API + UI) on loopback, on SQLite.

Used by ``beluga-flows server``/``demo``, the test suite and the benchmarks: one
real ``prefect server start`` subprocess with its own ``PREFECT_HOME``, so runs
survive the caller and are browsable in the UI.

The *home's* server (:func:`ensure_server`, :func:`use_server`, :func:`stop_server`)
is the one ``beluga-flows server`` keeps running detached, recorded in
``$BELUGA_FLOWS_HOME/server.json``; the CLI commands share these helpers, so they
live here, below the commands.

Example::

    with LocalServer.start(home=Path(".prefect")) as server:
        os.environ.update(server.client_env())
        ...                         # flows now report to server.api_url
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from beluga_flows._procs import alive, record, recorded, terminate
from beluga_flows.errors import ErrorCode, OrchestratorError

__all__ = [
    "DEFAULT_PORT",
    "LocalServer",
    "connect_if_running",
    "ensure_server",
    "free_port",
    "home",
    "logging_config_path",
    "port_if_free",
    "prefect_env",
    "running_server",
    "stop_server",
    "use_server",
]

DEFAULT_PORT = 4200


def logging_config_path() -> str:
    """The logging config that silences the server's shutdown noise."""
    return str(resources.files("beluga_flows") / "prefect_logging.yml")


def prefect_env(home: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a quiet, private Prefect: no analytics, our logging config."""
    env = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_SETTINGS_PATH": logging_config_path(),
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    if home is not None:
        env["PREFECT_HOME"] = str(home)
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalServer:
    """A ``prefect server start`` subprocess on ``host:port``."""

    host: str
    port: int
    home: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What a client process needs to report to this server."""
        return prefect_env(self.home, PREFECT_API_URL=self.api_url)

    @classmethod
    def start(
        cls,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = 120.0,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> LocalServer:
        """Start the server and wait until its API answers (``RESOURCE_EXHAUSTED`` if not)."""
        server = cls.launch(home, host=host, port=port, log=log, env=env)
        server.wait_ready(timeout)
        return server

    @classmethod
    def launch(
        cls,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        detach: bool = False,
    ) -> LocalServer:
        """Start the server process without waiting (call :meth:`wait_ready`).

        ``detach=True`` puts it in its own session so it outlives the caller (and
        the caller's Ctrl-C)."""
        home.mkdir(parents=True, exist_ok=True)
        server = cls(host=host, port=port or free_port(host), home=home)
        child_env = {**os.environ, **(env or {}), **prefect_env(home)}
        child_env.pop("PREFECT_API_URL", None)
        # The UI asks this URL for its data; Prefect derives it from its own default
        # port (4200), not from --port, so a UI on any other port would be blank.
        child_env["PREFECT_UI_API_URL"] = server.api_url
        out = open(log or home / "server.log", "ab")  # noqa: SIM115 - owned by the child
        server.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                host,
                "--port",
                str(server.port),
            ],
            env=child_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )
        out.close()
        return server

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the API answers; ``RESOURCE_EXHAUSTED`` if the process died,
        ``TIMEOUT`` if it never answered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise OrchestratorError(
                    "server",
                    f"prefect server exited with {self.process.returncode}; "
                    f"see {self.home / 'server.log'}",
                    ErrorCode.RESOURCE_EXHAUSTED,
                )
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise OrchestratorError(
            "server", f"prefect server did not answer within {timeout:g}s", ErrorCode.TIMEOUT
        )

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 15 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------- the home's server


def home() -> Path:
    """Where the local server keeps its database and pid file."""
    return Path(os.environ.get("BELUGA_FLOWS_HOME", ".beluga")).resolve()


def _state_file() -> Path:
    return home() / "server.json"


def _answering(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def running_server(patience: float = 60.0) -> dict[str, Any] | None:
    """The local server recorded in the home, if it answers. A busy server (its
    process alive) gets ``patience`` seconds: falling back to a temporary server
    would hide the runs from the UI the user is watching."""
    state = recorded(_state_file())
    if state is None:
        return None
    pid, started = int(state["pid"]), state.get("pid_start") or None
    deadline = time.monotonic() + patience
    while alive(pid, started):
        if _answering(state["api_url"]):
            return state
        if time.monotonic() > deadline:
            raise OrchestratorError(
                "cli",
                f"the server at {state['ui_url']} (pid {pid}) does not answer; "
                "stop it with: beluga-flows server --stop",
                ErrorCode.TIMEOUT,
            )
        time.sleep(0.5)
    return None


def ensure_server(port: int = DEFAULT_PORT) -> dict[str, Any]:
    """Reuse the home's server or start one detached (it outlives this command)."""
    state = running_server()
    if state is not None:
        return state
    server = LocalServer.launch(home() / "prefect", port=port_if_free(port), detach=True)
    print(f"Starting the Prefect server at {server.ui_url} (the first start migrates its database)")
    server.wait_ready(180)
    assert server.process is not None
    return record(_state_file(), server.process.pid, api_url=server.api_url, ui_url=server.ui_url)


def port_if_free(port: int) -> int:
    """``port`` when nothing listens on it, else a free one."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def use_server(state: dict[str, Any]) -> None:
    """Point this process's Prefect client at the home's server."""
    os.environ.update(prefect_env(home() / "client", PREFECT_API_URL=state["api_url"]))


def connect_if_running() -> None:
    """Report to the home's server when it runs and ``PREFECT_API_URL`` is not set
    (else to a quiet, private Prefect)."""
    if "PREFECT_API_URL" in os.environ:
        return
    state = running_server()
    if state is not None:
        use_server(state)
    else:
        os.environ.update(prefect_env())


def stop_server() -> dict[str, Any] | None:
    """Stop the home's server (one that does not answer all the same); its record,
    or ``None`` when none is recorded."""
    state = recorded(_state_file())
    if state is None:
        return None
    terminate(state, grace=30)
    _state_file().unlink(missing_ok=True)
    return state
