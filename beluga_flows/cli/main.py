"""The ``beluga-flows`` command: a local Prefect server, running flows, the demo.

Commands::

    beluga-flows server [--port 4200] [--foreground | --stop]
    beluga-flows run FILE:NAME [--param k=v ...]
    beluga-flows workflow start|signal|query|result|cancel|terminate|resume|serve ...
    beluga-flows demo

The local server keeps its state (SQLite) in ``$BELUGA_FLOWS_HOME`` (default
``./.beluga``); ``run`` and ``demo`` report to it when it is up and
``PREFECT_API_URL`` is not set, so every run shows in its UI.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import json
import keyword
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from beluga_flows import _sync
from beluga_flows._procs import alive, record, recorded, terminate
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools.server import LocalServer, prefect_env

__all__ = ["main"]

DEFAULT_PORT = 4200


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
    server = LocalServer.launch(home() / "prefect", port=_port_if_free(port), detach=True)
    print(f"Starting the Prefect server at {server.ui_url} (the first start migrates its database)")
    server.wait_ready(180)
    assert server.process is not None
    return record(_state_file(), server.process.pid, api_url=server.api_url, ui_url=server.ui_url)


def _port_if_free(port: int) -> int:
    import socket

    from beluga_flows.tools.server import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def use_server(state: dict[str, Any]) -> None:
    """Point this process's Prefect client at the home's server."""
    os.environ.update(prefect_env(home() / "client", PREFECT_API_URL=state["api_url"]))


def _connect_if_running() -> None:
    if "PREFECT_API_URL" in os.environ:
        return
    state = running_server()
    if state is not None:
        use_server(state)
    else:
        os.environ.update(prefect_env())


def load_target(target: str, *, what: str | None = None) -> Any:
    """``path/to/file.py:name`` → the object ``name`` defined in that file.

    The file is imported once per process without shadowing anything: its module
    name is the file's stem unless that names another importable module (then
    a private one), and its folder is searched *after* the stdlib and site
    packages (a sibling ``helpers.py`` still imports). An error raised while it
    imports is ``INVALID_CONFIG`` naming ``what`` (default: the file)."""
    path_text, sep, name = target.rpartition(":")
    if not sep or not path_text or not name:
        raise OrchestratorError(
            "cli", f"expected FILE:NAME, got {target!r}", ErrorCode.INVALID_INPUT
        )
    path = Path(path_text).resolve()
    if not path.is_file():
        raise OrchestratorError("cli", f"no such file: {path_text}", ErrorCode.NOT_FOUND)
    module_name = _module_name(path)
    module = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(path):  # load once
        module = _import_file(path, module_name, what or path_text)
    if not hasattr(module, name):
        raise OrchestratorError("cli", f"{path_text} defines no {name!r}", ErrorCode.NOT_FOUND)
    return getattr(module, name)


def _module_name(path: Path) -> str:
    """The stem when it names nothing else importable (what Prefect's runner calls the
    same file, so pickled results refer to one name in both), else the name Prefect's
    runner falls back to for a taken stem: never ``email`` for ``flows/email.py``."""
    stem = path.stem
    if stem.isidentifier() and not keyword.iskeyword(stem):
        loaded = sys.modules.get(stem)
        try:
            found = importlib.util.find_spec(stem) if loaded is None else loaded.__spec__
        except (ImportError, ValueError):
            found = None
        if found is None or found.origin == str(path):
            return stem
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:16]
    return f"__prefect_loader_{digest}__"


def _import_file(path: Path, module_name: str, what: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # last: it shadows no installed module
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise OrchestratorError(
            "cli", f"{what} does not import: {type(err).__name__}: {err}", ErrorCode.INVALID_CONFIG
        ) from err
    return module


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``k=v`` pairs; values are JSON when they parse as JSON, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise OrchestratorError(
                "cli", f"--param needs k=v, got {pair!r}", ErrorCode.INVALID_INPUT
            )
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def check_params(obj: Any, params: dict[str, Any]) -> None:
    """``INVALID_INPUT`` naming the parameter when ``obj`` cannot take ``params``
    (checked before the call: a ``TypeError`` raised inside it is its own failure)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # no signature to check against: the call will tell
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    unknown = [k for k in params if k not in signature.parameters and not takes_any]
    try:
        if unknown:
            raise TypeError(f"unknown parameter {', '.join(map(repr, unknown))}")
        signature.bind(**params)
    except TypeError as err:
        accepted = ", ".join(signature.parameters) or "none"
        raise OrchestratorError(
            "cli",
            f"{getattr(obj, 'name', obj)!s}: {err} (--param names it accepts: {accepted})",
            ErrorCode.INVALID_INPUT,
        ) from None


def run_target(obj: Any, params: dict[str, Any]) -> Any:
    """Call a flow/step with ``params`` as keyword arguments, or invoke a Runnable."""
    from beluga_flows.core.runnable import Runnable

    if isinstance(obj, Runnable) and not callable(getattr(obj, "fn", None)):
        return obj.invoke(params)
    if not callable(obj):
        raise OrchestratorError("cli", f"{obj!r} is not runnable", ErrorCode.INVALID_INPUT)
    check_params(obj, params)
    result = obj(**params)
    if inspect.isawaitable(result):
        return _sync.run_sync(lambda: result)
    return result


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cmd_server(args: argparse.Namespace) -> int:
    if args.stop:  # a server that does not answer is stopped all the same
        from beluga_flows.cli.demo import stop_serving

        stop_serving()  # first: it pauses its schedules through the server
        state = recorded(_state_file())
        if state is None:
            print("No beluga-flows server is running.")
            return 0
        terminate(state, grace=30)
        _state_file().unlink(missing_ok=True)
        print(f"Stopped the server at {state['ui_url']}.")
        return 0
    if args.foreground:
        server = LocalServer.launch(home() / "prefect", port=_port_if_free(args.port))
        signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop = Ctrl-C
        try:
            server.wait_ready(180)
            print(f"Prefect UI: {server.ui_url}   (Ctrl-C stops it)", flush=True)
            assert server.process is not None
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
        print("Stopped the server.")
        return 0
    state = ensure_server(args.port)
    print(f"Prefect UI: {state['ui_url']}   (stop: beluga-flows server --stop)")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    _connect_if_running()
    result = run_target(load_target(args.target), parse_params(args.param or []))
    print(json.dumps(result, default=str, indent=2) if not isinstance(result, str) else result)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from beluga_flows.cli.demo import demo

    return demo(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``beluga-flows``."""
    parser = argparse.ArgumentParser(prog="beluga-flows", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    server = sub.add_parser("server", help="start the local Prefect server and UI")
    server.add_argument("--port", type=int, default=DEFAULT_PORT)
    group = server.add_mutually_exclusive_group()
    group.add_argument("--foreground", action="store_true", help="run until Ctrl-C")
    group.add_argument("--stop", action="store_true", help="stop the background server")
    server.set_defaults(func=_cmd_server)
    run = sub.add_parser("run", help="run a flow, step or chain defined in a file")
    run.add_argument("target", help="FILE:NAME, e.g. flows/sales_report.py:sales_report")
    run.add_argument("--param", action="append", metavar="K=V", help="a parameter (repeatable)")
    run.set_defaults(func=_cmd_run)
    demo = sub.add_parser("demo", help="run the example flows and show them in the UI")
    demo.add_argument("--port", type=int, default=DEFAULT_PORT)
    demo.add_argument("--out", default="out", help="where the example writes its report")
    demo.set_defaults(func=_cmd_demo)
    from beluga_flows.cli import deploy as cli_deploy
    from beluga_flows.cli import workflow as cli_workflow

    cli_deploy.register(sub)
    cli_workflow.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``beluga-flows`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("workflow", "serve", "deploy", "list"):
            _connect_if_running()
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except BrokenPipeError:  # `beluga-flows list | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OrchestratorError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # The interrupted run's coroutines are dropped on purpose: no warning per one.
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
