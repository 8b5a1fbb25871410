"""``beluga-flows workflow …``: start, signal, query, wait for, cancel, terminate,
resume and serve durable workflows from the command line.

Commands that address a run by id (``signal``, ``query``, ``result``, ``cancel``,
``terminate``) need no code, only the Prefect API; ``start``, ``resume`` and
``serve`` load the workflow from ``FILE:NAME``. When nothing serves the workflow,
``start`` and ``resume`` host the run in this process and wait for it (leaving
would stop it); with a served deployment they print the handle and return.

Example::

    beluga-flows workflow start flows/order_workflow.py:orders --id order-7 --param order_id=7
    beluga-flows workflow signal order-7 approval --data '{"approved": true}'
    beluga-flows workflow result order-7
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from beluga_flows.durable.workflow import Workflow, WorkflowClient, WorkflowHandle
from beluga_flows.errors import ErrorCode, OrchestratorError
from beluga_flows.tools.targets import load_target, parse_params

__all__ = ["register"]


def _print(value: Any) -> None:
    print(value if isinstance(value, str) else json.dumps(value, default=str, indent=2))


def _workflow(target: str) -> Workflow:
    obj = load_target(target)
    if not isinstance(obj, Workflow):
        raise OrchestratorError(
            "cli", f"{target} is not a bf.Workflow (got {obj!r})", ErrorCode.INVALID_INPUT
        )
    return obj


def _data(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a bare word is a string


def _wait(
    client: WorkflowClient, workflow_id: str, run_id: str | None, timeout: float | None
) -> Any:
    """``get_result``, with a live status line on a terminal while it waits."""
    if not sys.stderr.isatty():
        return client.get_result(workflow_id, run_id, timeout=timeout)
    start = time.monotonic()
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - start)
        try:
            value = client.get_result(
                workflow_id, run_id, timeout=2.0 if left is None else min(2.0, left)
            )
        except OrchestratorError as err:
            if err.code is not ErrorCode.TIMEOUT or (left is not None and left <= 2.0):
                print(file=sys.stderr)
                raise
            status = client.query(workflow_id, run_id, "status")
            elapsed = time.monotonic() - start
            print(
                f"\r{workflow_id}: {status} ({elapsed:.0f} s)   ",
                end="",
                file=sys.stderr,
                flush=True,
            )
            continue
        print(file=sys.stderr)
        return value


def _host_or_return(wf: Workflow, handle: WorkflowHandle) -> int:
    """Print the handle; wait for the result when the run is hosted here."""
    from beluga_flows.engine.prefect.host import host

    _print({"workflow_id": handle.workflow_id, "run_id": handle.run_id})
    if handle.run_id not in host.live:
        return 0  # a served deployment runs it
    print(
        f"Hosting run {handle.run_id} here until it finishes (Ctrl-C stops it; "
        f"continue later with: beluga-flows workflow resume FILE:NAME {handle.workflow_id})",
        flush=True,
    )
    _print(_wait(wf, handle.workflow_id, handle.run_id, None))
    return 0


def _start(args: argparse.Namespace) -> int:
    wf = _workflow(args.target)
    params = parse_params(args.param or [])
    payload = _data(args.input) if args.input is not None else (params or None)
    return _host_or_return(wf, wf.execute(payload, workflow_id=args.id))


def _resume(args: argparse.Namespace) -> int:
    wf = _workflow(args.target)
    return _host_or_return(wf, wf.resume(args.workflow_id))


def _serve(args: argparse.Namespace) -> int:
    from beluga_flows.durable.workflow import serve

    served = [_workflow(target) for target in args.targets]
    names = ", ".join(f"{wf.name}/{wf.task_queue}" for wf in served)
    print(f"Serving {names} (Ctrl-C stops)", flush=True)
    serve(*served, limit=args.limit)
    return 0


def _signal(args: argparse.Namespace) -> int:
    WorkflowClient().signal(args.workflow_id, args.run, args.name, _data(args.data))
    print(f"sent {args.name!r} to {args.workflow_id}")
    return 0


def _query(args: argparse.Namespace) -> int:
    extra = [_data(a) for a in args.args]
    _print(WorkflowClient().query(args.workflow_id, args.run, args.type, *extra))
    return 0


def _result(args: argparse.Namespace) -> int:
    _print(_wait(WorkflowClient(), args.workflow_id, args.run, args.timeout))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    WorkflowClient().cancel(args.workflow_id, args.run)
    print(f"cancel requested for {args.workflow_id}")
    return 0


def _terminate(args: argparse.Namespace) -> int:
    WorkflowClient().terminate(args.workflow_id, args.run, reason=args.reason)
    print(f"terminated {args.workflow_id}: {args.reason}")
    return 0


def register(sub: Any) -> None:
    """Add ``workflow`` and its subcommands to the ``beluga-flows`` parser."""
    wf = sub.add_parser("workflow", help="start and talk to durable workflows")
    cmds = wf.add_subparsers(dest="workflow_command", required=True)

    def by_id(name: str, help: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = cmds.add_parser(name, help=help)
        p.add_argument("workflow_id")
        p.add_argument("--run", default=None, help="a run id (default: the latest run)")
        p.set_defaults(func=func)
        return p

    start = cmds.add_parser("start", help="start a run (hosted here unless served)")
    start.add_argument("target", help="FILE:NAME of a bf.Workflow")
    start.add_argument("--id", default=None, help="the workflow id (business key)")
    start.add_argument("--param", action="append", metavar="K=V", help="an input field")
    start.add_argument("--input", default=None, help="the whole input as JSON")
    start.set_defaults(func=_start)
    signal = by_id("signal", "send a signal", _signal)
    signal.add_argument("name")
    signal.add_argument("--data", default=None, help="JSON data (a bare word is a string)")
    query = by_id("query", "status, result, steps or a custom query", _query)
    query.add_argument("type")
    query.add_argument("args", nargs="*", help="JSON arguments of a custom query")
    result = by_id("result", "wait for the result", _result)
    result.add_argument("--timeout", type=float, default=None)
    by_id("cancel", "cancel gracefully (compensations run)", _cancel)
    terminate = by_id("terminate", "stop now, run nothing more", _terminate)
    terminate.add_argument("--reason", default="terminated from the CLI")
    resume = cmds.add_parser("resume", help="continue a crashed or failed workflow")
    resume.add_argument("target", help="FILE:NAME of the bf.Workflow")
    resume.add_argument("workflow_id")
    resume.set_defaults(func=_resume)
    serve = cmds.add_parser("serve", help="serve workflows' deployments from this process")
    serve.add_argument("targets", nargs="+", metavar="FILE:NAME", help="bf.Workflow objects")
    serve.add_argument("--limit", type=int, default=None, help="max concurrent runs")
    serve.set_defaults(func=_serve)
