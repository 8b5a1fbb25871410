"""The ``beluga-flows`` command: a local Prefect server, running flows, the demo.

Commands::

    beluga-flows server [--port 4200] [--foreground | --stop]
    beluga-flows run FILE:NAME [--param k=v ...]
    beluga-flows workflow start|signal|query|result|cancel|terminate|resume|serve ...
    beluga-flows definition validate|run|draw|schema ...
    beluga-flows health [--json] [--redis URL]
    beluga-flows demo

The local server keeps its state (SQLite) in ``$BELUGA_FLOWS_HOME`` (default
``./.beluga``); ``run`` and ``demo`` report to it when it is up and
``PREFECT_API_URL`` is not set, so every run shows in its UI.

This module is the parser and the top commands only: what several commands share
(target loading, params, the home's server, the background serve) lives below the
CLI in :mod:`beluga_flows.tools` (``targets``, ``server``, ``serving``), so the
command modules import those, never this one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings
from typing import Any

from beluga_flows.cli import definition as cli_definition
from beluga_flows.cli import demo as cli_demo
from beluga_flows.cli import deploy as cli_deploy
from beluga_flows.cli import health as cli_health
from beluga_flows.cli import workflow as cli_workflow
from beluga_flows.errors import OrchestratorError
from beluga_flows.tools.server import (
    DEFAULT_PORT,
    LocalServer,
    connect_if_running,
    ensure_server,
    home,
    port_if_free,
    stop_server,
)
from beluga_flows.tools.serving import stop_serving
from beluga_flows.tools.targets import load_target, parse_params, run_target

__all__ = ["build_parser", "main"]


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _cmd_server(args: argparse.Namespace) -> int:
    if args.stop:  # a server that does not answer is stopped all the same
        stop_serving()  # first: it pauses its schedules through the server
        state = stop_server()
        if state is None:
            print("No beluga-flows server is running.")
            return 0
        print(f"Stopped the server at {state['ui_url']}.")
        return 0
    if args.foreground:
        server = LocalServer.launch(home() / "prefect", port=port_if_free(args.port))
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
    connect_if_running()
    result = run_target(load_target(args.target), parse_params(args.param or []))
    print(json.dumps(result, default=str, indent=2) if not isinstance(result, str) else result)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    return cli_demo.demo(args)


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
    cli_deploy.register(sub)
    cli_workflow.register(sub)
    cli_definition.register(sub)
    cli_health.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``beluga-flows`` console script."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("workflow", "serve", "deploy", "list", "health"):
            connect_if_running()
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
