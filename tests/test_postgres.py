"""Scale-out: a separately started ``prefect server`` on PostgreSQL, a deployment on a
process work pool, and a ``prefect worker`` process that runs it.

PostgreSQL is Debian's (``make test`` installs ``postgresql``); the test starts its own
cluster on 127.0.0.1 in a temporary folder and removes it afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from beluga_flows.tools.server import LocalServer, free_port
from tests.procs import stop

ROOT = Path(__file__).resolve().parents[1]
BIN = next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)), None)
pytestmark = pytest.mark.skipif(
    BIN is None, reason="PostgreSQL is not installed (make test installs Debian's postgresql)"
)


def _as_postgres(args: list[str]) -> list[str]:
    """initdb refuses to run as root: run the cluster as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    # Not under pytest's tmp_path: its parents are private to this user, and the
    # cluster may run as the postgres user.
    base = Path(tempfile.mkdtemp(prefix="beluga-pg-"))
    data, port = base / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    run = lambda *a: subprocess.run(_as_postgres(list(a)), check=True, capture_output=True)  # noqa: E731
    run(f"{BIN}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(
        f"{BIN}/pg_ctl", "-D", str(data), "-w", "-l", str(base / "log"),
        "-o", f"-p {port} -h 127.0.0.1 -k {base}", "start",
    )  # fmt: skip
    try:
        run(f"{BIN}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "prefect")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        run(f"{BIN}/pg_ctl", "-D", str(data), "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_a_worker_runs_a_deployment_on_a_postgres_backed_server(
    postgres: str, tmp_path: Path
) -> None:
    env_db = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres}
    with LocalServer.start(tmp_path / "server", env=env_db, timeout=240) as server:
        env = {
            **os.environ,
            **server.client_env(),
            "PREFECT_HOME": str(tmp_path / "client"),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        ticks, pool = tmp_path / "ticks.txt", f"pg-{uuid.uuid4().hex[:6]}"
        spec = tmp_path / "tick.yaml"
        spec.write_text(
            f"name: on-postgres\nentrypoint: tests/deploy_app.py:tick\n"
            f"parameters: {{path: '{ticks}'}}\nwork_pool: {pool}\n"
        )
        deployed = subprocess.run(
            [sys.executable, "-m", "beluga_flows.cli", "deploy", str(spec)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            ran = subprocess.run(
                [
                    sys.executable, "-c",
                    "from prefect.deployments import run_deployment; "
                    "r = run_deployment('tick/on-postgres', timeout=180); "
                    "print(r.state.type.value)",
                ],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert ran.stdout.strip().endswith("COMPLETED"), ran.stdout + ran.stderr
            assert len(ticks.read_text().splitlines()) == 1
        finally:
            stop(worker)
