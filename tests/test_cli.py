"""The beluga-flows command, through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from beluga_flows._procs import alive
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools.server import LocalServer
from beluga_flows.tools.targets import parse_params
from tests.procs import stop

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``beluga-flows *args`` in the project root, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "beluga_flows.cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def example(path: str, api_url: str) -> subprocess.CompletedProcess[str]:
    """``python <path>`` (an example script) in the project root, against ``api_url``."""
    return subprocess.run(
        [sys.executable, path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PREFECT_API_URL": api_url, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )


def test_run_the_example_flow_against_the_server(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    done = cli(
        "run",
        "flows/sales_report.py:sales_report",
        "--param",
        f"out_dir={tmp_path}",
        "--param",
        "csv_path=flows/data/sales.csv",
        env={"PREFECT_API_URL": prefect_server.api_url},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["rejected"] == 3 and result["revenue"] > 0
    report = (tmp_path / "sales_report.md").read_text()
    assert report.startswith("# Sales report") and "| north |" in report
    summary = json.loads((tmp_path / "sales_summary.json").read_text())
    assert summary["rows"] == 117 and set(summary["by_region"]) == {
        "north",
        "south",
        "east",
        "west",
    }


def test_run_reports_bad_targets_with_their_code() -> None:
    missing = cli("run", "flows/nope.py:x")
    assert missing.returncode == 2 and "[not_found]" in missing.stderr
    malformed = cli("run", "flows/sales_report.py")
    assert malformed.returncode == 2 and "[invalid_input]" in malformed.stderr
    unknown = cli("run", "flows/sales_report.py:no_such_flow")
    assert unknown.returncode == 2 and "no_such_flow" in unknown.stderr


def test_params_are_json_when_they_parse() -> None:
    assert parse_params(["n=3", "name=kayak", "flags=[1, 2]", "empty="]) == {
        "n": 3,
        "name": "kayak",
        "flags": [1, 2],
        "empty": "",
    }
    with pytest.raises(OrchestratorError) as info:
        parse_params(["novalue"])
    assert info.value.code is ErrorCode.INVALID_INPUT


def test_resilient_fetch_example_degrades_gracefully(prefect_server: LocalServer) -> None:
    done = cli(
        "run",
        "flows/resilient_fetch.py:resilient_fetch",
        "--param",
        "sku=paddle",
        env={"PREFECT_API_URL": prefect_server.api_url},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result == {
        "sku": "paddle",
        "stock": 42,
        "price": 420.0,
        "price_source": "list price (pricing timed out)",
    }


def test_readme_quick_start_is_the_example_file_and_runs(prefect_server: LocalServer) -> None:
    readme = (ROOT / "README.md").read_text()
    snippet = readme.split("## Quick start", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert snippet == (ROOT / "flows" / "quickstart.py").read_text()
    done = example("flows/quickstart.py", prefect_server.api_url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "shorts",
        "shorts",
        "execution_failed ValueError('which city?')",
    ]


def test_research_assistant_example_loops_then_writes(
    prefect_server: LocalServer, tmp_path: Path
) -> None:
    done = cli(
        "run",
        "flows/research_assistant.py:research",
        "--param",
        f"out_dir={tmp_path}",
        env={"PREFECT_API_URL": prefect_server.api_url},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result["rounds"] == 2 and result["gaps"] == [] and result["findings"] >= 4
    report = (tmp_path / "research.md").read_text()
    assert "## timeouts" in report and "## retries" in report


def _ctrl_c_during_the_demo(env: dict[str, str], port: int, tmp_path: Path) -> None:
    """Ctrl-C in a terminal: SIGINT to the demo's whole process group mid-example."""
    demo = subprocess.Popen(
        [sys.executable, "-m", "beluga_flows.cli", "demo", "--port", str(port)],
        cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, text=True, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        for line in demo.stdout:  # the first example ran; the second is starting
            if line.startswith("== flows/resilient_fetch.py"):
                break
        os.killpg(demo.pid, signal.SIGINT)
        _, err = demo.communicate(timeout=60)
    finally:
        stop(demo)
    assert demo.returncode == 130, err
    # one line, not a KeyboardInterrupt traceback (the example itself logs its timeouts,
    # and the interrupted runs log how they ended)
    assert "interrupted" in err.splitlines() and "KeyboardInterrupt" not in err, err
    assert "was never awaited" not in err, err


def test_server_foreground_runs_until_stopped(tmp_path: Path) -> None:
    import httpx

    from beluga_flows.tools.server import free_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "beluga_flows.cli", "server", "--foreground", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "BELUGA_FLOWS_HOME": str(tmp_path / "home")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline()
        assert first.startswith(f"Prefect UI: http://127.0.0.1:{port}"), first
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        server.terminate()  # as a service manager stops it
        out, err = server.communicate(timeout=60)
    finally:
        stop(server)
    assert server.returncode == 0 and "Stopped the server." in out, err
    with pytest.raises(httpx.ConnectError):  # the Prefect server went with it
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5)


def test_demo_serves_schedules_runs_the_examples_and_server_stop_ends_it_all(
    tmp_path: Path,
) -> None:
    import httpx

    from beluga_flows.tools.server import free_port

    home, port = tmp_path / "home", free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["BELUGA_FLOWS_HOME"] = str(home)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "beluga_flows.cli", *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    demo = run("demo", "--port", str(port), "--out", str(tmp_path / "out"))
    try:
        assert demo.returncode == 0, demo.stderr
        for name in ("sales-report", "research-assistant", "orders", "enterprise", "deployments"):
            assert f"  {name}" in demo.stdout
        assert '"approved_by": "demo"' in demo.stdout  # the workflow, approved by signal
        ui = f"http://127.0.0.1:{port}"
        assert httpx.get(ui, timeout=10).status_code == 200
        serving = int(json.loads((home / "serve.json").read_text())["pid"])
        os.kill(serving, 0)  # the scheduled deployments are being served
        listed = run("list")
        assert "sales-report/every-minute" in listed.stdout and "every 60 s" in listed.stdout
        again = run("server", "--port", str(port))
        assert again.returncode == 0 and f"Prefect UI: {ui}" in again.stdout  # reused
        _ctrl_c_during_the_demo(env, port, tmp_path)
        assert httpx.get(f"{ui}/api/health", timeout=10).status_code == 200  # detached
        assert alive(serving)
    finally:
        stopped = run("server", "--stop")
    assert stopped.returncode == 0 and "Stopped the server" in stopped.stdout
    assert "Stopped serving" in stopped.stdout
    assert not alive(serving)  # the background serve is gone too (or a zombie)
    assert not (home / "serve.json").exists() and not (home / "server.json").exists()


def test_a_pid_file_of_a_reused_pid_is_stale_and_nothing_is_stopped(tmp_path: Path) -> None:
    from beluga_flows._procs import record, recorded

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / "server.json"
        assert record(path, sleeper.pid, ui_url="u")["pid"] == sleeper.pid
        assert recorded(path) == json.loads(path.read_text())  # running: recorded
        state = json.loads(path.read_text())
        path.write_text(json.dumps({**state, "pid_start": "1"}))  # the pid now names another
        assert recorded(path) is None and not path.exists()
        env = {"BELUGA_FLOWS_HOME": str(tmp_path)}
        path.write_text(json.dumps({**state, "pid_start": "1", "api_url": "x"}))
        done = cli("server", "--stop", env=env)
        assert done.returncode == 0 and "No beluga-flows server is running" in done.stdout
        assert sleeper.poll() is None  # the unrelated process was left alone
    finally:
        stop(sleeper)


def local_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``beluga-flows`` on the in-process engine, with a home of its own."""
    return cli(*args, env={"BELUGA_FLOWS_PROVIDER": "local", "BELUGA_FLOWS_HOME": str(tmp_path)})


def test_a_target_file_named_like_a_stdlib_module_shadows_nothing(tmp_path: Path) -> None:
    (tmp_path / "mailhelp.py").write_text("GREETING = 'hello'\n")  # a sibling module
    (tmp_path / "email.py").write_text(
        "import beluga_flows as bf\n"
        "from mailhelp import GREETING\n\n"
        "@bf.flow\n"
        "def send(to: str) -> dict:\n"
        "    import email.message\n\n"
        "    msg = email.message.EmailMessage()\n"
        "    msg['To'] = to\n"
        "    return {'to': msg['To'], 'greeting': GREETING, 'type': msg.get_content_type()}\n"
    )
    done = local_cli(tmp_path, "run", f"{tmp_path}/email.py:send", "--param", "to=ana")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout[done.stdout.index("{") :])
    assert result == {"to": "ana", "greeting": "hello", "type": "text/plain"}


def test_loading_a_target_leaves_sys_modules_and_sys_path_alone(tmp_path: Path) -> None:
    from beluga_flows.tools.targets import load_target

    (tmp_path / "json.py").write_text("VALUE = 42\n")
    before = list(sys.path)
    assert load_target(f"{tmp_path}/json.py:VALUE") == 42
    assert load_target(f"{tmp_path}/json.py:VALUE") == 42  # loaded once
    assert json.dumps([1]) == "[1]" and sys.modules["json"] is json
    assert sys.path[: len(before)] == before  # the file's folder is searched last


def test_a_target_that_fails_to_import_is_invalid_config(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import no_such_package_anywhere  # noqa\n")
    done = local_cli(tmp_path, "run", f"{tmp_path}/broken.py:flow")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "[invalid_config]" in line
    assert "broken.py" in line and "ModuleNotFoundError" in line
    assert "no_such_package_anywhere" in line


def test_a_wrong_param_is_invalid_input_naming_it(tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(
        "import beluga_flows as bf\n\n"
        "@bf.flow\n"
        "def greet(name: str, punctuation: str = '!') -> str:\n"
        "    return 'hi ' + name + punctuation\n\n"
        "@bf.flow\n"
        "def clumsy(name: str) -> str:\n"
        "    return len(name, 2)  # a TypeError inside the function\n"
    )
    done = local_cli(tmp_path, "run", f"{tmp_path}/greet.py:greet", "--param", "nme=ana")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "[invalid_input]" in line and "'nme'" in line
    assert "name" in line and "punctuation" in line  # the ones it accepts
    missing = local_cli(tmp_path, "run", f"{tmp_path}/greet.py:greet")
    assert missing.returncode == 2 and "[invalid_input]" in missing.stderr
    assert "'name'" in missing.stderr
    ok = local_cli(tmp_path, "run", f"{tmp_path}/greet.py:greet", "--param", "name=ana")
    assert ok.returncode == 0 and ok.stdout.strip() == "hi ana!", ok.stderr
    inside = local_cli(tmp_path, "run", f"{tmp_path}/greet.py:clumsy", "--param", "name=ana")
    assert inside.returncode != 0 and "[invalid_input]" not in inside.stderr
    assert "len() takes exactly one argument" in inside.stderr  # the function's own error
