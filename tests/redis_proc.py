"""A private redis-server for fault tests: start, stop (kill), pause, restart on one port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from beluga_flows.tools.server import free_port


class RedisProc:
    """One redis-server process on a fixed loopback port (no persistence)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (apt-get install redis-server)"
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisProc:
        """Start (again, on the same port) and wait until it answers."""
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """Stop it at once (SIGKILL): its clients see refused connections."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self, paused: bool) -> None:
        """SIGSTOP / SIGCONT: its clients see a server that does not answer."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def clients(self) -> int:
        """How many client connections the server has (this one included)."""
        return len(redis.Redis.from_url(self.url).client_list())
